"""LAEO data (thesis §2.1): head crops and head maps, procedural scenes and episodes, UCO-LAEO and AVA-LAEO."""
