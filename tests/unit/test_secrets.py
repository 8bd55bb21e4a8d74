from farm.secrets import Masker


def test_masker_masks_longest_first_and_skips_short_values():
    m = Masker(["abcdef", "abcdefgh", "xy"])
    assert m("key=abcdefgh and abcdef and xy") == "key=*** and *** and xy"
    assert m.hold == 7
    assert Masker([])("anything") == "anything"
