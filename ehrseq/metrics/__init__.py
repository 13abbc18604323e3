"""Evaluation metrics on numpy/torch arrays, validated against scikit-survival and brute force."""
