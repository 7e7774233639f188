"""Knowledge distillation: the loss, the frozen teacher and its cached logits."""
