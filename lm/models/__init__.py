"""Model families, each assembled from the shared layers in lm/layers.py."""
import flax.linen as nn

from lm.config import ModelConfig
from lm.models.bert import Bert
from lm.models.gpt import GPT
from lm.models.t5 import T5


def build(config: ModelConfig) -> nn.Module:
    """The model for `config.family`; `config.vocab_size` must already be resolved."""
    families = {"gpt": GPT, "bert": Bert, "t5": T5}
    return families[config.family](config)
