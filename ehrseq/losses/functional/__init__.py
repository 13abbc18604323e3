"""Functional losses: pure functions on tensors (logits or log-parameters), masked and vectorized."""
