"""Constants shared with upstream LLaVA (values are part of the checkpoint and data formats)."""

IGNORE_INDEX = -100
# A sentinel, not a vocabulary id: one per image in the tokenised prompt, replaced inside the model by
# however many visual tokens that image produced.
IMAGE_TOKEN_INDEX = -200

DEFAULT_IMAGE_TOKEN = "<image>"
