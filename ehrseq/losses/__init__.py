"""Losses: functional cores (``ehrseq.losses.functional``) and thin ``nn.Module`` wrappers."""
