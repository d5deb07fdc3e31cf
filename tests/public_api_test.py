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
