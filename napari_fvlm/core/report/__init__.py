"""Results in words and over time: the findings table of one analysis, a structured report draft
from it, and the comparison of a prior and a current analysis. Qt-free."""
