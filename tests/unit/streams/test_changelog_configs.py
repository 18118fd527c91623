"""The feedback join's changelog is created with segments that roll and short-lived
tombstones, so compaction bounds what a restarted worker replays."""

from pathlib import Path

from streams.faust_app import changelog_topic_configs, make_app
from streams.monitoring.feedback import register_feedback
from streams.settings import Settings


def test_the_feedback_join_changelog_rolls_segments_for_compaction(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path, changelog_segment_s=600, changelog_tombstone_retention_s=3600
    )
    assert changelog_topic_configs(settings) == {
        "segment.ms": "600000",
        "delete.retention.ms": "3600000",
    }
    app = make_app(settings, "changelog-configs")
    table = register_feedback(app, settings).table
    topic = table.changelog_topic
    assert topic.config == {"segment.ms": "600000", "delete.retention.ms": "3600000"}
    assert topic.compacting  # Faust's own default for a table changelog, kept
