"""Pins the public names of keras_kd, so they change only on purpose."""

import keras_kd
from tests.test_case import TestCase


class PublicAPITest(TestCase):
    def test_top_level(self):
        self.assertEqual(
            sorted(keras_kd.__all__),
            sorted([
                "DIST",
                "DKD",
                "Distiller",
                "FeatureMatch",
                "GeneralizedJSD",
                "HardLoss",
                "LogitTerm",
                "RelationMatch",
                "ReverseKL",
                "SkewKL",
                "SkewReverseKL",
                "SoftTargets",
                "Term",
                "__version__",
                "callbacks",
                "data",
                "export",
                "fused",
                "load_distiller",
                "lora",
                "losses",
                "quantization",
                "students",
                "terms",
                "vocabulary",
            ]),
        )
        for name in keras_kd.__all__:
            self.assertTrue(hasattr(keras_kd, name), name)

    def test_terms(self):
        self.assertEqual(
            sorted(keras_kd.terms.__all__),
            ["DIST", "DKD", "GeneralizedJSD", "HardLoss", "LogitTerm",
             "ReverseKL", "SkewKL", "SkewReverseKL", "SoftTargets", "Term",
             "get"],
        )

    def test_losses(self):
        self.assertEqual(
            sorted(keras_kd.losses.__all__),
            sorted([
                "ALL_IDS", "AttentionTransfer", "FeatureCosine", "FeatureL1",
                "FeatureMSE", "FeatureSmoothL1", "GeneralizedJSDivergence",
                "LossFunctionWrapper", "PKT", "RKDAngle", "RKDDistance",
                "ReverseKLDivergence", "SimilarityPreserving",
                "SkewKLDivergence", "SkewReverseKLDivergence",
                "SoftTargetKL", "attention_transfer", "bernoulli_kl",
                "binary_cross_entropy", "deserialize", "ensemble_logits",
                "feature_cosine", "feature_l1", "feature_mse",
                "feature_smooth_l1", "forward_kl_divergence",
                "generalized_js_divergence", "get", "hard_cross_entropy",
                "ids", "label_mask", "pkt", "register",
                "reverse_kl_divergence", "rkd_angle", "rkd_distance",
                "serialize", "similarity_preserving",
                "skew_kl_divergence", "skew_reverse_kl_divergence",
                "soft_target_kl",
                "standardize_logits",
            ]),
        )

    def test_callbacks(self):
        self.assertEqual(
            sorted(keras_kd.callbacks.__all__),
            ["AlphaScheduler", "TemperatureScheduler", "cosine", "linear",
             "step_decay"],
        )

    def test_tuning(self):
        self.assertEqual(
            sorted(keras_kd.tuning.__all__),
            ["DistillerHyperModel", "best_student", "format_trial_table",
             "plot_trials", "trial_table"],
        )

    def test_export(self):
        self.assertEqual(
            sorted(keras_kd.export.__all__),
            ["LiteRTModel", "ParityReport", "QUANTIZATION_MODES",
             "export_student", "parity_report"],
        )

    def test_data(self):
        self.assertEqual(
            sorted(keras_kd.data.__all__),
            ["OnPolicyData", "RandomCropFlip", "TeacherOutputCache",
             "TeacherViewCache", "TopKTeacherCache", "UNLABELED",
             "ViewAugmentation", "cache_teacher_outputs",
             "cache_teacher_views", "densify_top_k", "generate",
             "load_dataset", "mix_labeled_unlabeled", "on_policy",
             "teacher_labels"],
        )

    def test_quantization(self):
        self.assertEqual(
            sorted(keras_kd.quantization.__all__),
            [
                "FakeQuant",
                "QuantizeWrapper",
                "SUPPORTED_LAYERS",
                "calibrate",
                "fake_quant",
                "fake_quant_weights",
                "is_quantize_aware",
                "nudged_range",
                "quantize_aware",
            ],
        )

    def test_students(self):
        self.assertEqual(sorted(keras_kd.students.__all__), ["shrink"])

    def test_language_model_modules(self):
        self.assertEqual(sorted(keras_kd.fused.__all__),
                         ["FusedDivergence", "FusedHardLoss", "FusedStudent",
                          "fused_token_loss"])
        self.assertEqual(sorted(keras_kd.lora.__all__),
                         ["lora_layers", "merge_lora"])
        self.assertEqual(sorted(keras_kd.vocabulary.__all__),
                         ["TruncatedVocabulary", "dropped_mass"])
