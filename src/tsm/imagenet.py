"""ImageNet's channel statistics: the normalisation the backbones' weights expect (``conf/data/base.yaml``
states the same for the configs)."""

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
