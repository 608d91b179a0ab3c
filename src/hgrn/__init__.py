"""HGRN1/HGRN2 reproduction suite.

Importing the package registers the named image models with timm (`timm.create_model("hgrn2_vit_tiny")`).
"""

from hgrn import models  # noqa: F401  (registers the timm entry points)
