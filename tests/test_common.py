import dataclasses

import tensorflow as tf
from absl import flags

from compression_helps.models import registry
from compression_helps.selection import runner
from compression_helps.sources import datasets
from experiments import common


@dataclasses.dataclass(frozen=True)
class _Inner:
    """Nested settings.

    Attributes:
      name: what the outer field is called on the command line.
      size: a number.
    """

    FLAG_PREFIX = ""
    name: str = "a"
    size: int | None = None


@dataclasses.dataclass(frozen=True)
class _Prefixed:
    """Settings with a flag prefix.

    Attributes:
      a: the first parameter.
    """

    FLAG_PREFIX = "p_"
    a: float = 1.5


@dataclasses.dataclass(frozen=True)
class _Outer:
    """Outer settings.

    Attributes:
      inner: the nested part.
      params: prefixed parameters.
      qualities: some integers,
        with a help text over two lines.
      drops: some floats.
      names: one or more names.
      flag: a boolean.
      note: optional text.
    """

    inner: _Inner = _Inner()
    params: _Prefixed = _Prefixed()
    qualities: tuple[int, ...] = (90, 10)
    drops: tuple[float, ...] = (0.0, 0.5)
    names: str | tuple[str, ...] = "x"
    flag: bool = False
    note: str | None = "text"


def parse(config_class, argv, **kwargs):
    values = flags.FlagValues()
    config_flags = common.define_config_flags(
        config_class, flag_values=values, **kwargs
    )
    values(["prog", *argv])
    return config_flags.value(), values


class ConfigFlagsTest(tf.test.TestCase):
    def test_defaults_give_the_class_defaults(self):
        config, _ = parse(_Outer, [])
        self.assertEqual(config, _Outer(names=("x",)))

    def test_every_field_type_parses(self):
        config, _ = parse(
            _Outer,
            [
                "--inner=b",
                "--size=3",
                "--p_a=2.5",
                "--qualities=50,40",
                "--drops=1,2.5",
                "--names=u,v",
                "--flag",
                "--note=none",
            ],
        )
        self.assertEqual(
            config,
            _Outer(
                inner=_Inner("b", 3),
                params=_Prefixed(2.5),
                qualities=(50, 40),
                drops=(1.0, 2.5),
                names=("u", "v"),
                flag=True,
                note=None,
            ),
        )

    def test_help_comes_from_the_docstring(self):
        _, values = parse(_Outer, [])
        self.assertEqual(
            values["qualities"].help,
            "some integers, with a help text over two lines.",
        )
        self.assertEqual(
            values["inner"].help,
            "what the outer field is called on the command line.",
        )

    def test_bad_list_item_is_one_line_error(self):
        with self.assertRaisesRegex(ValueError, r"^--qualities: .*'50,x'"):
            parse(_Outer, ["--qualities=50,x"])

    def test_omitted_flags_keep_the_defaults(self):
        config, values = parse(
            _Outer, [], defaults=_Outer(flag=True), omit=("flag", "size")
        )
        self.assertNotIn("flag", values)
        self.assertNotIn("size", values)
        self.assertTrue(config.flag)

    def test_required_flag_must_be_given(self):
        with self.assertRaises(flags.IllegalFlagValueError):
            parse(_Outer, [], required=("note",))

    def test_main_job_flags_keep_their_readme_names(self):
        config, _ = parse(
            runner.Config,
            ["--model=resnet50v2", "--weights=none", "--data=d", "--limit=3"],
        )
        self.assertEqual(
            config.model, registry.ModelConfig("resnet50v2", None, None)
        )
        self.assertEqual(config.data, datasets.DataConfig("d", limit=3))
