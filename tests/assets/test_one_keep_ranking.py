"""The keep ranking is made once per run (issue 15, item 2): the review file is read when the
scores are made, and grouping uses the ranking and pins the scores carry, so an edit to the review
file mid-run can never make the group's keeper differ from the score's keeper."""

import shutil

import dagster as dg
import pandas as pd
from synthetic_images import sample_photo

from imgdedup_pipeline.core.settings import Settings
from imgdedup_pipeline.definitions import ALL_ASSETS, resources_for
from imgdedup_pipeline.resources.image_store import ImageStoreResource

ORIGINAL, COPY = "photos/coffee.png", "copies/coffee_copy.png"


def write_review_file(root, pins: dict[str, str]) -> None:
    (root / ".imgdedup").mkdir(exist_ok=True)
    pd.DataFrame({"path": list(pins), "decision": list(pins.values())}).to_csv(
        root / ".imgdedup" / "review.csv", index=False
    )


def test_a_review_file_edited_mid_run_leaves_score_and_group_on_one_keeper(tmp_path, monkeypatch):
    root = tmp_path / "images"
    (root / "photos").mkdir(parents=True)
    (root / "copies").mkdir()
    sample_photo("coffee").resize((96, 64)).save(root / ORIGINAL)
    sample_photo("rocket").resize((96, 64)).save(root / "photos" / "rocket.png")
    shutil.copy(root / ORIGINAL, root / COPY)
    write_review_file(root, {ORIGINAL: "keep"})

    # Each read of the review file is followed by the user's edit, which pins the other copy.
    reads = []
    read_review_pins = ImageStoreResource.review_pins

    def read_then_edited(self):
        pins = read_review_pins(self)
        reads.append(pins)
        write_review_file(root, {COPY: "keep"})
        return pins

    monkeypatch.setattr(ImageStoreResource, "review_pins", read_then_edited)
    settings = Settings(image_root=str(root), out_dir=str(tmp_path / "out"), embedder="offline")
    with dg.instance_for_test() as instance:
        result = dg.materialize(ALL_ASSETS, resources=resources_for(settings), instance=instance)
    assert result.success
    assert reads[0] == {ORIGINAL: "keep"}

    scores = result.output_for_node("score_uniqueness", "uniqueness_scores").set_index("path")
    assert scores.loc[ORIGINAL, "uniqueness"] > 0 and scores.loc[COPY, "uniqueness"] == 0
    groups = pd.read_csv(tmp_path / "out" / "uniqueness.csv").set_index("path")
    assert groups.loc[[ORIGINAL, COPY], "group_keeper"].tolist() == [ORIGINAL, ORIGINAL]
    duplicates = pd.read_csv(tmp_path / "out" / "duplicates.csv")
    assert duplicates[["path", "duplicate_of"]].values.tolist() == [[COPY, ORIGINAL]]
