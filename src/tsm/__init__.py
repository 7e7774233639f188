"""TSM: temporal shift for efficient video recognition, on timm backbones."""
