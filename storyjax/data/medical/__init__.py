"""Medical data: the kidney-transplant cohorts of CosEmb/MEDIMP (thesis §4.1), procedural and real (NIfTI)."""
