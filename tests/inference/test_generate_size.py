"""`ardrag generate` at the bucket nearest the reference's aspect, or at --size; real requests' sizes
(724x1086 to 3984x2656), too many points and points that leave the frame."""

import json

import av
import cv2
import numpy as np
import pytest

import ardrag.inference.generate as gen
from ardrag.data.buckets import default_buckets
from ardrag.errors import ConfigError
from ardrag.inference.trajectory import fit_to_resolution, load_reference, load_trajectory
from ardrag.model.pipeline import TINY_BUCKETS, ARDragPipeline, GenerationConfig

TINY = GenerationConfig(height=64, width=96, buckets=TINY_BUCKETS)


def write_request(folder, width, height, points, frames=6):
    """A smooth ``width`` x ``height`` PNG (compresses well at 3984x2656) and a drag drawn on it."""
    y, x = np.mgrid[0:height, 0:width]
    image = np.stack([x * 255 // width, y * 255 // height, (x + y) * 127 // (width + height)], -1)
    cv2.imwrite(str(folder / "ref.png"), image.astype(np.uint8))
    drags = [{"x": list(np.linspace(x0, x1, frames)), "y": [float(y0)] * frames} for x0, x1, y0 in points]
    traj = {"width": width, "height": height, "points": drags}
    (folder / "traj.json").write_text(json.dumps(traj))
    return folder / "ref.png", folder / "traj.json"


def video_size(path):
    with av.open(str(path)) as container:
        frame = next(container.decode(video=0))
        return frame.width, frame.height


def test_the_default_buckets_are_the_papers_and_the_tiny_presets_span_three_aspects():
    assert GenerationConfig().buckets == [b.name for b in default_buckets()] == [
        "480x368", "400x400", "368x480", "640x368", "368x640"]  # fmt: skip
    assert ARDragPipeline.tiny().config.buckets == TINY_BUCKETS == ["96x64", "80x80", "64x96"]
    assert ARDragPipeline.tiny(height=48, width=80).config.buckets is None  # a size given: that size only
    with pytest.raises(ValueError, match="'100x64': expected width and height multiples of 16"):
        GenerationConfig(buckets=["100x64"])
    with pytest.raises(ValueError, match="not of the form WIDTHxHEIGHT"):
        GenerationConfig(buckets=["big"])


@pytest.mark.parametrize(
    "size, width, height, why",
    [
        ((724, 1086), 64, 96, "bucket"),  # portrait 2:3 stays portrait
        ((3984, 2656), 96, 64, "bucket"),  # landscape 3:2
        ((1000, 1000), 80, 80, "bucket"),
        ((4000, 1000), 96, 64, "bucket"),  # wider than any bucket: the widest
    ],
)
def test_the_bucket_nearest_the_references_aspect_is_chosen(size, width, height, why):
    assert gen.render_size(TINY, *size) == (width, height, why)


def test_real_requests_sizes_with_the_papers_buckets():
    """3:2 (3984x2656, log-aspect 0.405) is nearer 480x368 (0.266) than 640x368 (0.553)."""
    real = GenerationConfig()
    assert gen.render_size(real, 3984, 2656) == (480, 368, "bucket")
    assert gen.render_size(real, 724, 1086) == (368, 480, "bucket")
    assert gen.render_size(real, 1080, 1920) == (368, 640, "bucket")
    assert gen.render_size(real, 724, 1086, "832x480") == (832, 480, "--size")
    assert gen.render_size(real.model_copy(update={"buckets": None}), 724, 1086) == (640, 368, "model")


@pytest.mark.parametrize("size", ["100x64", "0x64", "-16x32", "64", "64x64x64", "axb", "64 by 64"])
def test_a_bad_size_names_the_option_the_value_and_the_expectation(size):
    with pytest.raises(ConfigError) as err:
        gen.parse_size(size)
    assert str(err.value) == (
        f"--size {size}: expected WIDTHxHEIGHT in pixels, both positive multiples of 16, e.g. 480x368"
    )


def test_a_bad_size_or_device_fails_before_any_model_loads(tmp_path, monkeypatch):
    ref, traj = write_request(tmp_path, 640, 360, [(100, 300, 180)])
    monkeypatch.setattr(gen, "load_pipeline", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError, match="--size 100x64"):
        gen.generate(ref, traj, "x", tmp_path / "out.mp4", preset="tiny", size="100x64")
    with pytest.raises(ConfigError, match="--dtype fp8"):
        gen.generate(ref, traj, "x", tmp_path / "out.mp4", preset="tiny", dtype="fp8")


def test_at_size_shares_the_models():
    pipe = ARDragPipeline.tiny()
    portrait = pipe.at_size(64, 96)
    assert (portrait.config.width, portrait.config.height) == (64, 96)
    assert portrait.transformer is pipe.transformer and portrait.wan is pipe.wan
    assert portrait.config.buckets == pipe.config.buckets and pipe.config.width == 96
    assert pipe.at_size(96, 64) is pipe
    with pytest.raises(ValueError):
        pipe.at_size(0, 96)


def test_a_portrait_photo_renders_portrait(tmp_path):
    ref, traj = write_request(tmp_path, 724, 1086, [(100, 600, 500), (360, 360, 900)])
    out = tmp_path / "out.mp4"
    summary = gen.generate(ref, traj, "a dog", out, preset="tiny", progress=False)
    assert (summary["width"], summary["height"], summary["size_from"]) == (64, 96, "bucket")
    assert summary["reference_size"] == [724, 1086] and summary["frames"] == 6
    assert (summary["device"], summary["dtype"]) == ("cpu", "float32")
    assert video_size(out) == (64, 96)
    forced = gen.generate(ref, traj, "a dog", out, preset="tiny", size="80x80", progress=False)
    assert (forced["width"], forced["height"], forced["size_from"]) == (80, 80, "--size")
    assert video_size(out) == (80, 80)


def test_a_3984x2656_photo_renders_at_the_landscape_bucket_nearest_3_2(tmp_path):
    ref, traj = write_request(tmp_path, 3984, 2656, [(500, 3000, 1300)])
    summary = gen.generate(ref, traj, "a dog", tmp_path / "out.mp4", preset="tiny", dtype="bfloat16",
                           progress=False)  # fmt: skip
    assert (summary["width"], summary["height"], summary["dtype"]) == (96, 64, "bfloat16")
    assert video_size(tmp_path / "out.mp4") == (96, 64)


def test_nine_points_are_refused_naming_the_file_the_count_and_the_limit(tmp_path, monkeypatch):
    ref, traj = write_request(tmp_path, 3984, 2656, [(100 + 400 * i, 200 + 400 * i, 1000) for i in range(9)])
    monkeypatch.setattr(gen, "load_pipeline", lambda *a: pytest.fail("a model was loaded"))
    with pytest.raises(ConfigError) as err:
        gen.generate(ref, traj, "x", tmp_path / "out.mp4", preset="tiny")
    assert str(err.value) == f"{traj}: points has 9 entries; expected at most 8 control points"


def test_a_point_leaving_the_frame_becomes_not_visible_with_a_warning(tmp_path):
    """The documented fit (ardrag.inference.trajectory): a visible point up to 25% of the image outside it
    is kept, and where it is outside the rendered frame it is not visible from then on, with a warning;
    farther out it is an error naming the point, the frame and the allowed range."""
    ref, traj = write_request(tmp_path, 3984, 2656, [(3000, 4600, 1300), (1000, 1200, 1300)], frames=5)
    image, trajectory = load_reference(ref), load_trajectory(traj)
    with pytest.warns(UserWarning, match=r"2 visible point position\(s\) fall outside the 96x64 centre crop "
                                         r"of the 3984x2656 reference image"):  # fmt: skip
        _, fitted = fit_to_resolution(image, trajectory, 96, 64)
    assert fitted.visible[:, 0].tolist() == [True, True, True, False, False]  # x 3000 .. 4600 past 3983.5
    assert fitted.visible[:, 1].all() and np.isfinite(fitted.tracks).all()
    with pytest.warns(UserWarning, match="treated as not visible"):
        summary = gen.generate(ref, traj, "a dog", tmp_path / "out.mp4", preset="tiny", progress=False)
    assert summary["frames"] == 5

    write_request(tmp_path, 3984, 2656, [(3000, 5200, 1300)], frames=5)
    with pytest.raises(ConfigError, match=r"points\[0\]\.x\[4\] is 5200.0; expected x in \[-996.5, 4979.5\]"):
        load_trajectory(traj)


def test_a_model_folder_without_buckets_renders_at_its_one_size(tmp_path):
    """The shipped toy model's recipe predates the field: it renders at 80x48, where it was trained."""
    from factories import toy_model_folder

    from ardrag.model.model_folder import load_model_folder

    toy_model_folder(tmp_path / "toy")
    recipe = json.loads((tmp_path / "toy" / "recipe.json").read_text())
    assert recipe["generation"].pop("buckets") is None
    (tmp_path / "toy" / "recipe.json").write_text(json.dumps(recipe))
    config = load_model_folder(tmp_path / "toy").config
    assert config.buckets is None and gen.render_size(config, 724, 1086) == (80, 48, "model")
