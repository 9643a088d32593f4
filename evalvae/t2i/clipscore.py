"""CLIP score of a generated image against its prompt, with a transformers CLIP model."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import torch

from evalvae.checkpoints import local_then_hub, state_dict_sha256
from evalvae.metrics import info as shipped
from evalvae.metrics.features import MetricUnavailable

log = logging.getLogger(__name__)


def _embedding(output) -> torch.Tensor:
    # transformers 5 returns an output object whose pooler_output is the projected embedding;
    # transformers 4 returned the tensor itself.
    return getattr(output, "pooler_output", output)


class CLIPScore:
    """``max(100 * cos(E_image, E_text), 0)`` per image (Hessel et al. 2021; torchmetrics' definition).

    Images are the 8-bit decodes, through the model's own image processor (resize, centre crop,
    normalisation). Prompts are tokenized with truncation to the model's context (77 tokens for
    CLIP), keeping the end-of-text token the text embedding is pooled from. Weights come from the
    hub cache or a local folder; without them the metric is unavailable.
    """

    infos = (shipped.CLIP_SCORE,)
    set_level = False
    note = ""

    def __init__(self, model: str = "openai/clip-vit-large-patch14", batch_size: int = 32):
        from transformers import CLIPModel, CLIPProcessor

        def load(local_files_only: bool):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return (
                    CLIPProcessor.from_pretrained(model, local_files_only=local_files_only),
                    CLIPModel.from_pretrained(model, local_files_only=local_files_only),
                )

        try:
            self.processor, net = local_then_hub(load, may_download=not Path(model).expanduser().is_dir())
        except Exception as e:  # offline, missing or gated: unavailable, with the reason
            raise MetricUnavailable(
                f"CLIP model {model!r} could not be loaded ({type(e).__name__}); download it where the hub "
                "is reachable or set t2i.clip_score.model=/path/to/clip-folder"
            ) from None
        self.model = net.eval().requires_grad_(False)
        self.model_id, self.batch_size, self.device = model, batch_size, torch.device("cpu")
        self.max_tokens = self.model.config.text_config.max_position_embeddings
        self.weights_sha256 = state_dict_sha256(self.model.state_dict())

    def to(self, device: torch.device) -> CLIPScore:
        self.model.to(device)
        self.device = torch.device(device)
        return self

    @torch.inference_mode()
    def text_features(self, texts: list[str]) -> torch.Tensor:
        """Unit-norm text embeddings ``(N, D)``."""
        out = []
        for i in range(0, len(texts), self.batch_size):
            tok = self.processor(
                text=list(texts[i : i + self.batch_size]),
                return_tensors="pt",
                padding=True,
                truncation=True,
                max_length=self.max_tokens,
            ).to(self.device)
            out.append(
                _embedding(
                    self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
                )
            )
        f = torch.cat(out).double()
        return f / f.norm(dim=-1, keepdim=True)

    @torch.inference_mode()
    def image_features(self, images: torch.Tensor) -> torch.Tensor:
        """Unit-norm image embeddings ``(N, D)`` of ``(N, 3, H, W)`` uint8 images."""
        out = []
        for chunk in images.split(self.batch_size):
            pixels = self.processor(images=list(chunk.cpu().permute(0, 2, 3, 1).numpy()), return_tensors="pt")[
                "pixel_values"
            ]
            out.append(_embedding(self.model.get_image_features(pixel_values=pixels.to(self.device))))
        f = torch.cat(out).double()
        return f / f.norm(dim=-1, keepdim=True)

    def score(self, image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        """Per-pair scores ``(N,)`` float64 from unit-norm features."""
        return (100 * (image_features * text_features.to(image_features.device)).sum(-1)).clamp_(min=0).cpu()

    def __call__(self, images: torch.Tensor, texts: list[str]) -> dict[str, torch.Tensor]:
        """``{"clip_score": (N,) float64}`` of ``(N, 3, H, W)`` uint8 images against their prompts (on the CPU)."""
        return {"clip_score": self.score(self.image_features(images), self.text_features(texts))}

    def protocol(self) -> dict:
        return {
            "implementation": f"transformers {type(self.model).__name__}, max(100 * cos, 0) per image",
            "model": self.model_id,
            "weights_sha256": self.weights_sha256,
            "input": "8-bit decode through the model's image processor",
            "text": f"tokenized with truncation to {self.max_tokens} tokens (end-of-text token kept)",
        }
