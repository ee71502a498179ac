"""Registry: determinism, batch-split invariance, parameter checking, keys and dtypes of every generator."""

import numpy as np
import pytest

from slotssm.data import generate, get_spec, list_generators, resolve_params

# Tiny settings per generator so the whole file runs in seconds.
TINY = {
    "bouncing_balls": dict(num_frames=6, image_size=32, num_objects=3),
    "blinking_balls": dict(num_frames=5, image_size=32, num_objects=3),
    "shapes_video": dict(num_frames=4, image_size=32, num_objects=(2, 4)),
    "snitch": dict(num_frames=20, image_size=32, slot_length=5, num_objects=(4, 5), num_cones=(1, 2)),
}


def test_all_generators_listed():
    assert list_generators() == sorted(TINY)


@pytest.mark.parametrize("name", sorted(TINY))
def test_same_seed_same_bytes_other_seed_differs(name):
    a = generate(name, 3, seed=5, **TINY[name])
    b = generate(name, 3, seed=5, **TINY[name])
    c = generate(name, 3, seed=6, **TINY[name])
    assert a.keys() == b.keys() == set(get_spec(name).dims)
    for key in a:
        assert a[key].dtype == b[key].dtype and a[key].tobytes() == b[key].tobytes(), key
    image = get_spec(name).images[0]
    assert a[image].tobytes() != c[image].tobytes()


@pytest.mark.parametrize("name", sorted(TINY))
def test_batch_split_does_not_change_bytes(name):
    whole = generate(name, 5, seed=1, **TINY[name])
    parts = [generate(name, 2, seed=1, offset=0, **TINY[name]), generate(name, 3, seed=1, offset=2, **TINY[name])]
    static = get_spec(name).static
    for key in whole:
        joined = parts[0][key] if key in static else np.concatenate([p[key] for p in parts])
        assert joined.tobytes() == whole[key].tobytes(), key


@pytest.mark.parametrize("name", sorted(TINY))
def test_shapes_and_dtypes(name):
    out = generate(name, 2, seed=0, **TINY[name])
    spec = get_spec(name)
    for key, dims in spec.dims.items():
        assert out[key].ndim == len(dims), key
        if dims[0] == "video":
            assert out[key].shape[0] == 2, key
    for key in spec.images:
        assert out[key].dtype == np.uint8, key
    size = TINY[name]["image_size"]
    assert out[spec.images[0]].shape[2:4] == (size, size)


def test_unknown_parameter_is_named():
    with pytest.raises(ValueError, match="'radius'"):
        generate("bouncing_balls", 1, radius=3)
    with pytest.raises(ValueError, match="unknown generator 'nope'"):
        generate("nope", 1)


def test_parameter_types_and_ranges_are_checked():
    with pytest.raises(ValueError, match="num_objects"):
        resolve_params("bouncing_balls", {"num_objects": 2.5})
    with pytest.raises(ValueError, match="rule"):
        resolve_params("blinking_balls", {"rule": "latest"})
    with pytest.raises(ValueError, match="patch"):
        resolve_params("blinking_balls", {"patch": 7})
    with pytest.raises(ValueError, match="variant"):
        resolve_params("shapes_video", {"variant": "c"})
    # A list where a tuple is expected, and a single number for a (min, max) range, are accepted.
    assert resolve_params("shapes_video", {"num_objects": 5})["num_objects"] == (5, 5)
    assert resolve_params("bouncing_balls", {"mass_values": [1, 2]})["mass_values"] == (1.0, 2.0)


def test_too_many_balls_is_an_error_naming_num_objects():
    with pytest.raises(ValueError, match="num_objects"):
        generate("bouncing_balls", 1, image_size=16, num_objects=30, radius_range=(0.2, 0.25))
