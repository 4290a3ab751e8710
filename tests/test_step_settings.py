"""The settings' steps beyond ilastik's three (lazyexport.step_settings): their order is checked
when the settings are made, and the command line keeps the order its options were given in."""

import pytest

from lazyexport import ExportSettings
from lazyexport.errors import SettingsError
from lazyexport.step_settings import given_steps


def test_an_unknown_step_in_the_order_is_refused():
    with pytest.raises(SettingsError, match="step_order names 'blur', not a step"):
        ExportSettings(step_order=["blur"])


def test_no_step_given_means_no_step_and_no_order_kept():
    settings = ExportSettings(step_order=[])
    assert settings.step_order is None
    assert given_steps(settings) == []
    assert "step_order" not in settings.to_dict()


@pytest.mark.parametrize("value", [5, 1.5, True, [1, 2]])
def test_a_step_order_that_names_no_steps_is_a_settings_error(value):
    with pytest.raises(SettingsError, match="step_order must name steps"):
        ExportSettings(step_order=value)
