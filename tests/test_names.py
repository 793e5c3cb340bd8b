"""The user-name rule (mfa_radius/rules/names.py) through its public functions, and hypothesis on it."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mfa_radius.rules import names
from mfa_radius.config import PolicyConfig

FOLD = names.canonicaliser(strip_realm=True, case="fold")
EXACT = names.canonicaliser(strip_realm=True, case="exact")
KEEP = names.canonicaliser(strip_realm=False, case="fold")


@pytest.mark.parametrize("sent", ["alice", "ALICE", "Alice", "EXAMPLE\\alice", "alice@EXAMPLE",
                                  "example.com\\ALICE@EXAMPLE.COM", "ａｌｉｃｅ",
                                  "ＡＬＩＣＥ＠ＥＸ"])
def test_variants_of_a_name_are_that_name(sent):
    assert FOLD(sent) == "alice"
    assert names.canonical_user(sent, PolicyConfig()) == "alice"


@pytest.mark.parametrize("sent", [
    "alice ", " alice", "alice\t", "\talice", "alice\n", "ali\x00ce", "alice\x7f", "ali\x85ce",
    "ali\x9bce", "ali\u2028ce", "ali\u2029ce", "ali\u202ece", "ali\u2066ce", "ali\u200bce",
    "ali\u200dce", "\ufeffalice", "ali\u00a0ce", "ali\u3000ce", "alice\u00a0", "", "a" * 257,
    "\\alice", "EXAMPLE\\", "alice@", "@EXAMPLE", "a@b@c", "A\\B\\c", "EXAMPLE\\ alice",
    "alice @EXAMPLE", "ali\ud800ce",
])
def test_malformed_names_are_refused(sent):
    with pytest.raises(names.UserNameError) as info:
        FOLD(sent)
    assert info.value.reason == "malformed"
    assert "\n" not in str(info.value) and "\x1b" not in str(info.value)


def test_an_inner_space_is_kept():
    assert FOLD("Alice Smith") == "alice smith"


def test_composed_and_decomposed_forms_are_one_name():
    assert FOLD("Jose\u0301") == FOLD("Jos\u00e9") == "jos\u00e9"
    assert EXACT("Jose\u0301") == "Jos\u00e9"


def test_fold_lowers_without_case_folding_sharp_s():
    # Case folding would make straße and strasse one account; directories keep them apart.
    assert FOLD("STRAßE") == "straße" != FOLD("strasse")


def test_exact_keeps_case_but_still_strips_and_refuses():
    assert EXACT("EXAMPLE\\Alice") == "Alice"
    with pytest.raises(names.UserNameError):
        EXACT("Alice ")


def test_without_strip_realm_a_realm_name_is_kept_and_is_not_local():
    assert KEEP("Alice@EXAMPLE") == "alice@example"
    assert KEEP("EXAMPLE\\Alice") == "example\\alice"
    assert names.realm_qualified(KEEP("alice@EXAMPLE"))
    assert not names.realm_qualified(KEEP("alice"))


def test_fold_key_makes_root_root_in_any_case():
    assert names.fold_key("ROOT") == names.fold_key("Root") == "root"
    assert names.fold_key("root ") == ""


def test_plan_renames_lone_names_and_keeps_clashes_apart():
    plan = names.plan(["Alice", "bob", "Carol", "carol", "DAVE", "Dave", "x\u200by"], FOLD)
    assert plan.renames == {"Alice": "alice"}
    assert plan.clashes == {"carol": ["Carol", "carol"], "dave": ["DAVE", "Dave"]}
    assert plan.refused == ["x\u200by"]
    lines = names.plan_lines(plan)
    assert len(lines) == 3
    assert "'Carol' and 'carol'" in lines[0] and "mfa-radius user rename Carol" in lines[0]
    assert all("\u200b" not in line for line in lines)  # escaped for the terminal


def test_the_fast_path_returns_plain_names_as_they_are():
    name = "alice42"
    assert FOLD(name) is name
    assert EXACT("Alice42") == "Alice42"


# ---- properties ---------------------------------------------------------------------------------

_ANY = st.text(max_size=40)
# Names with the characters that matter more often than uniform text would give them.
_TRICKY = st.lists(st.sampled_from(list("aAzZ09 ._-@\\ßİıſǅΣσς\u0301\u00e9\uff21\uff20\u200b"
                                        "\u202e\x85\t\x00")) | st.characters(),
                   max_size=24).map("".join)


def _ok(rule, text):
    try:
        return rule(text)
    except names.UserNameError:
        return None


@settings(max_examples=800)
@given(st.one_of(_ANY, _TRICKY), st.sampled_from([FOLD, EXACT, KEEP]))
def test_the_rule_is_idempotent(text, rule):
    out = _ok(rule, text)
    if out is not None:
        assert rule(out) == out


@settings(max_examples=800)
@given(st.one_of(_ANY, _TRICKY), st.sampled_from([FOLD, EXACT, KEEP]))
def test_a_canonical_name_has_no_surrounding_space_control_or_format_character(text, rule):
    out = _ok(rule, text)
    if out is None:
        return
    assert out and len(out) <= names.MAX_LEN
    assert not out[0].isspace() and not out[-1].isspace()
    for ch in out:
        assert unicodedata.category(ch) not in ("Cc", "Cf", "Cs", "Zl", "Zp")
        assert not ch.isspace() or ch == " "
    assert unicodedata.is_normalized("NFC", out)
    if rule is not KEEP:
        assert "@" not in out and "\\" not in out


@settings(max_examples=800)
@given(st.one_of(_ANY, _TRICKY))
def test_fold_does_not_see_case(text):
    out = _ok(FOLD, text)
    assert _ok(FOLD, text.lower()) == out
    # fold(x) == fold(upper(x)) wherever upper case maps back (not for ß -> SS: lower(), not
    # case folding, see names.py), which is every ASCII name.
    if text.upper().lower() == text.lower():
        assert _ok(FOLD, text.upper()) == out
    if text.isascii():
        assert text.upper().lower() == text.lower()


@settings(max_examples=500)
@given(st.from_regex(r"[a-z][a-z0-9._-]{0,30}", fullmatch=True),
       st.from_regex(r"[A-Za-z0-9.-]{1,20}", fullmatch=True))
def test_a_realm_or_domain_never_changes_who_a_plain_name_is(user, realm):
    assert FOLD(f"{realm}\\{user}") == FOLD(f"{user}@{realm}") == FOLD(user.upper()) == user


@pytest.mark.parametrize("rule", [FOLD, EXACT, KEEP])
@pytest.mark.parametrize("sent", ["", " ", "alice ", "a\x00", "a" * 257])
def test_every_setting_refuses_empty_spaced_and_control_names(rule, sent):
    with pytest.raises(names.UserNameError):
        rule(sent)
