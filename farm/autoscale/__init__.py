"""Capacity: pure policies (`policy`), what the predictive one learns (`forecast`)."""
