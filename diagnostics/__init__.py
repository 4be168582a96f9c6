"""Measurements beside the library, not in it: the train-step benchmark, the attention probe and
other frameworks' training loops at our shapes (PyTorch / Hugging Face, the `hf` extra). They
import `lm`; `lm` never imports them."""
