"""Encoders (history → one state per visit), heads (state → distribution) and the survival distributions."""
