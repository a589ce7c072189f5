"""gallery/users.py: tokens shown once and kept as salted hashes, scrypt passwords, three roles, names under the
identity names' rule, disable and rotate, authentication by token or by name and password."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import select

from gallery.access_models import User
from gallery.db import Database
from gallery.users import (
    ROLES,
    UserExistsError,
    UserInputError,
    UserNotFoundError,
    add_user,
    any_users,
    authenticate_password,
    authenticate_token,
    disable_user,
    hash_password,
    list_users,
    rank,
    rotate_user,
)

PASSWORD = "a long enough password"


@pytest.fixture
def db(tmp_path):
    with Database(f"sqlite:///{tmp_path / 'users.db'}") as db:
        yield db


def _row(db, name: str) -> User:
    with db.session() as session:
        return session.scalar(select(User).where(User.name == name))


def test_a_token_is_kept_only_as_its_salted_hash(db):
    assert not any_users(db)
    account, token = add_user(db, "ann", "viewer")
    token_id, secret = token.split(".")
    row = _row(db, "ann")
    assert row.token_id == token_id and secret not in row.token_hash and row.token_hash.startswith("sha256$")
    assert len(secret) >= 40 and len(token_id) >= 16 and any_users(db)
    _, other = add_user(db, "bob", "viewer")
    assert (
        other.split(".")[1] != secret
        and _row(db, "bob").token_hash.split("$")[1] != row.token_hash.split("$")[1]
    )
    assert authenticate_token(db, token).name == "ann" and account.role == "viewer"


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t + "x",
        lambda t: t[:-1],
        lambda t: t.split(".")[0],
        lambda t: t.split(".")[1],
        lambda t: "." + t.split(".")[1],
        lambda t: t.split(".")[0] + ".",
        lambda t: t.upper(),
        lambda t: "",
        lambda t: t + "." + "x" * 300,
    ],
)
def test_anything_but_the_token_is_refused(db, mangle):
    _, token = add_user(db, "ann", "admin")
    assert authenticate_token(db, mangle(token)) is None


def test_passwords(db):
    add_user(db, "ann", "investigator", PASSWORD)
    add_user(db, "bob", "viewer")  # no password: token only
    stored = _row(db, "ann").password_hash
    assert stored.startswith("scrypt$") and PASSWORD not in stored
    assert authenticate_password(db, "ann", PASSWORD).role == "investigator"
    assert authenticate_password(db, " ann ", PASSWORD).name == "ann"
    for name, password in (("ann", PASSWORD + "!"), ("ann", ""), ("bob", PASSWORD), ("carl", PASSWORD)):
        assert authenticate_password(db, name, password) is None
    assert hash_password(PASSWORD) != hash_password(PASSWORD)  # salted


def test_an_unknown_name_costs_what_a_known_one_does(db):
    add_user(db, "ann", "viewer", PASSWORD)

    def cost(name: str) -> float:
        start = time.perf_counter()
        for _ in range(3):
            authenticate_password(db, name, "wrong password")
        return time.perf_counter() - start

    known, unknown = cost("ann"), cost("nobody")
    assert 0.3 < unknown / known < 3.0


@pytest.mark.parametrize("password", ["short", "x" * 1025])
def test_a_refused_password_adds_nobody(db, password):
    with pytest.raises(UserInputError, match="password: expected 8-1024 characters"):
        add_user(db, "ann", "viewer", password)
    assert list_users(db) == []


@pytest.mark.parametrize(
    "name,role,error,message",
    [
        ("ann", "boss", UserInputError, "role: expected one of viewer, investigator, admin, got 'boss'"),
        ("ann", "Admin", UserInputError, "role: expected one of"),
        ("", "viewer", UserInputError, "user name: expected 1-200 characters"),
        ("a\nb", "viewer", UserInputError, "control character"),
        ("evil\u202etxt", "viewer", UserInputError, "bidi"),
        ("x" * 201, "viewer", UserInputError, "expected 1-200 characters"),
    ],
)
def test_bad_names_and_roles(db, name, role, error, message):
    with pytest.raises(error, match=message):
        add_user(db, name, role)


def test_roles_are_ordered():
    assert ROLES == ("viewer", "investigator", "admin")
    assert [rank(r) for r in ROLES] == [0, 1, 2]


def test_a_taken_name_is_refused(db):
    add_user(db, "ann", "viewer")
    with pytest.raises(UserExistsError, match="already taken"):
        add_user(db, " ann", "admin")
    assert [(a.name, a.role) for a in list_users(db)] == [("ann", "viewer")]


def test_disable_and_rotate(db):
    _, token = add_user(db, "ann", "admin", PASSWORD)
    first = disable_user(db, "ann").disabled_at
    assert first is not None and disable_user(db, "ann").disabled_at == first
    assert authenticate_token(db, token) is None and authenticate_password(db, "ann", PASSWORD) is None
    _, kept = add_user(db, "bob", "viewer", PASSWORD)
    account, new = rotate_user(db, "bob")
    assert account.rotated_at is not None and new != kept
    assert authenticate_token(db, kept) is None and authenticate_token(db, new).name == "bob"
    assert authenticate_password(db, "bob", PASSWORD).name == "bob"
    for change in (disable_user, rotate_user):
        with pytest.raises(UserNotFoundError, match="expected an existing user"):
            change(db, "carl")


def test_the_listing_holds_no_hash(db):
    add_user(db, "ann", "admin", PASSWORD)
    [row] = [a.as_dict() for a in list_users(db)]
    assert set(row) == {"name", "role", "created_at", "rotated_at", "disabled_at", "password"}
    assert row["password"] is True and "$" not in repr(row)
