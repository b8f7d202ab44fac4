"""The paper's protocol constants, in one place (arXiv 2406.18944; docs/PAPER.md).

Every default prompt, word and learning rate of the protocol is defined here and imported wherever it
is used (CLI defaults, bench presets, trainers, samplers, protections), so a change of protocol is one
edit. Section numbers refer to ``docs/PAPER.md``.
"""

from __future__ import annotations

IDENTIFIER = "sks"  # the rare-token identifier V* (docs/PAPER.md §7, Anti-DreamBooth's convention)
CLASS_WORD = "person"  # the class noun of the faces protocol (docs/PAPER.md §7)


def instance_prompt(subject: str = CLASS_WORD) -> str:
    """``"a photo of sks <subject>"``: DreamBooth's instance prompt (docs/PAPER.md §7)."""
    return f"a photo of {IDENTIFIER} {subject}"


def class_prompt(subject: str = CLASS_WORD) -> str:
    """``"a photo of <subject>"``: the prior-preservation class prompt (docs/PAPER.md §7)."""
    return f"a photo of {subject}"


INSTANCE_PROMPT = instance_prompt()  # "a photo of sks person"
CLASS_PROMPT = class_prompt()  # "a photo of person"
# Evaluation prompts: the first two lines of the dataset's prompts.txt with @@@ -> sks (docs/PAPER.md §11).
SAMPLE_PROMPTS = (INSTANCE_PROMPT, f"a dslr portrait of {IDENTIFIER} {CLASS_WORD}")

# CDL (docs/PAPER.md §5): the noise phrase and the prompt templates of the reference code.
CDL_NOISE = "bhj noisy pattern"
CDL_INSTANCE_TEMPLATE = "{prompt}, {noise}"
CDL_CLASS_TEMPLATE = "{prompt}, without {noise}"
CDL_SAMPLE_SUFFIX = ", without {noise}"
# When sampling appends CDL_SAMPLE_SUFFIX: "always" is the reference's (DiffShortcut train_dreambooth.py:514 appends
# ", without " + the noise phrase to every sampling prompt, CDL-trained or not, negative prompt or not); "cdl+qes"
# only for a CDL-trained model sampled with QES (cloakbench before #31); "never".
SUFFIX_MODES = ("always", "cdl+qes", "never")
SAMPLE_SUFFIX = "always"

# QES (docs/PAPER.md §6): negative prompt, guidance, steps.
QES_NEGATIVE = "noisy, lowres, artifact, pattern"
QES_STEPS = 100
PLAIN_SAMPLE_STEPS = 50
GUIDANCE = 7.5
SAMPLES_PER_PROMPT = 16  # docs/PAPER.md §11

# Fine-tuning (docs/PAPER.md §7): full DreamBooth (UNet + text encoder), lr 5e-7 constant. LoRA is not in the
# paper; 1e-4 is this project's LoRA default (also ASPL-LoRA's surrogate lr, docs/PROTECTIONS.md).
DREAMBOOTH_STEPS = 1000
LR_FULL = 5e-7
LR_LORA = 1e-4
NUM_CLASS_IMAGES = 200
CLASS_IMAGE_STEPS = 50
PRIOR_WEIGHT = 1.0


def default_lr(lora: bool) -> float:
    """The protocol's learning rate: :data:`LR_LORA` for LoRA, :data:`LR_FULL` for a full fine-tune."""
    return LR_LORA if lora else LR_FULL

# Seeds are in [0, SEED_MAX]: derived seeds (seed + image index) then stay inside what torch.Generator and numpy
# take (a larger one was a traceback from deep inside a stage, #37 item 9).
SEED_MAX = 2**32 - 1
