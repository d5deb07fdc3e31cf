"""Data for distillation: local datasets, teacher labels, cached outputs.

- `load_dataset`: data already on this machine (bundled digits, `.npz`,
  prepared TensorFlow Datasets).
- `cache_teacher_outputs` / `TeacherOutputCache`: the teacher's outputs
  computed once and reused every epoch; with `top_k=`, the k largest
  log-probabilities per token (`keras_kd.data.topk.TopKTeacherCache`, and
  `keras_kd.data.topk.densify_top_k` to rebuild dense log-probabilities).
- `cache_teacher_views` / `TeacherViewCache`: the teacher's outputs for K
  fixed augmented views of each image (`RandomCropFlip`), so training with
  augmentation can skip the teacher: each epoch shows another stored view.
- `teacher_labels` / `densify_top_k`: soft labels, top-k logits and
  pseudo-labels from the teacher.
- `mix_labeled_unlabeled`: labeled and unlabeled samples in one batch.
- `on_policy` / `OnPolicyData`: language-model batches completed by the
  current student for a fraction `lmbda` of them (GKD, on-policy
  distillation), by the teacher (`seq_kd=True`) or taken from the data,
  with the prompt masked; `generate` samples completions from a causal LM
  with the same seeded sampler.
"""

from keras_kd.data import topk  # noqa: F401  (keras_kd.data.topk)
from keras_kd.data.cache import TeacherOutputCache
from keras_kd.data.cache import cache_teacher_outputs
from keras_kd.data.mixing import UNLABELED
from keras_kd.data.mixing import mix_labeled_unlabeled
from keras_kd.data.on_policy import OnPolicyData
from keras_kd.data.on_policy import generate
from keras_kd.data.on_policy import on_policy
from keras_kd.data.sources import load_dataset
from keras_kd.data.teacher_labels import densify_top_k
from keras_kd.data.teacher_labels import teacher_labels
from keras_kd.data.topk import TopKTeacherCache
from keras_kd.data.views import RandomCropFlip
from keras_kd.data.views import TeacherViewCache
from keras_kd.data.views import ViewAugmentation
from keras_kd.data.views import cache_teacher_views

__all__ = [
    "OnPolicyData",
    "UNLABELED",
    "RandomCropFlip",
    "TeacherOutputCache",
    "TeacherViewCache",
    "TopKTeacherCache",
    "ViewAugmentation",
    "cache_teacher_outputs",
    "cache_teacher_views",
    "densify_top_k",
    "generate",
    "load_dataset",
    "mix_labeled_unlabeled",
    "on_policy",
    "teacher_labels",
]
