"""Pins the public names of keras_kd, so they change only on purpose."""

import keras_kd
from tests.test_case import TestCase


class PublicAPITest(TestCase):
    def test_top_level(self):
        self.assertEqual(
            sorted(keras_kd.__all__),
            sorted([
                "Distiller",
                "FeatureMatch",
                "RelationMatch",
                "__version__",
                "callbacks",
                "data",
                "export",
                "load_distiller",
                "losses",
            ]),
        )
        for name in keras_kd.__all__:
            self.assertTrue(hasattr(keras_kd, name), name)

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
            ["TeacherOutputCache", "UNLABELED", "cache_teacher_outputs",
             "densify_top_k", "load_dataset", "mix_labeled_unlabeled",
             "teacher_labels"],
        )
