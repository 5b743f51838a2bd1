"""rosbag2 I/O without ROS: sqlite3 and MCAP round trips, QoS metadata, compression, detections."""

from __future__ import annotations

from pathlib import Path
import shutil

import numpy as np
import pytest
from rosbags.rosbag2 import StoragePlugin, Writer
from rosbags.typesys import get_typestore as rosbags_typestore
from rosbags.typesys import Stores
import yaml

from ivf_ros.io import bagio
from ivf_ros.io.bagio import (
    BagError,
    BagReader,
    BagWriter,
    CameraTopics,
    INFRARED_TOPIC,
    StampModel,
    VISIBLE_TOPIC,
)
from ivf_ros.pipeline.detector import Detection

WIDTH, HEIGHT, FRAMES = 64, 48, 4


def random_pairs(count: int = FRAMES, thermal_bits: int = 8) -> list[tuple[np.ndarray, ...]]:
    rng = np.random.default_rng(7)
    dtype = np.uint8 if thermal_bits == 8 else np.uint16
    return [(rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8),
             rng.integers(0, np.iinfo(dtype).max, (HEIGHT, WIDTH), dtype=dtype))
            for _ in range(count)]


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
@pytest.mark.parametrize('thermal_bits', [8, 16])
def test_round_trip(tmp_path: Path, storage: str, thermal_bits: int) -> None:
    pairs = random_pairs(thermal_bits=thermal_bits)
    stamps = StampModel(rate_hz=10.0, infrared_offset_s=0.004, jitter_s=0.0005)
    counts = bagio.write_pairs(tmp_path / 'bag', pairs, storage=storage, stamps=stamps)
    assert counts == {VISIBLE_TOPIC: FRAMES, INFRARED_TOPIC: FRAMES}
    with BagReader(tmp_path / 'bag') as reader:
        assert reader.storage == storage
        visible = list(reader.frames(VISIBLE_TOPIC))
        infrared = list(reader.frames(INFRARED_TOPIC))
        log_times = [message.log_time_ns for message in reader.messages()]
    assert log_times == sorted(log_times)
    for index, (vis, ir) in enumerate(pairs):
        assert np.array_equal(visible[index].array, vis)
        assert np.array_equal(infrared[index].array, ir)
        assert visible[index].encoding == 'rgb8'
        assert infrared[index].encoding == ('mono8' if thermal_bits == 8 else 'mono16')
        assert visible[index].frame_id == bagio.VISIBLE_FRAME_ID
        assert infrared[index].frame_id == bagio.INFRARED_FRAME_ID
        offset = infrared[index].stamp_ns - visible[index].stamp_ns
        assert 0.001e9 < offset < 0.007e9  # a few ms infrared offset, with jitter
        if index:
            period = visible[index].stamp_ns - visible[index - 1].stamp_ns
            assert abs(period - 0.1e9) < 0.004e9


def test_stamps_are_deterministic_and_log_time_trails_stamp() -> None:
    model = StampModel(seed=3)
    first = [model.frame_stamps(index) for index in range(5)]
    assert first == [model.frame_stamps(index) for index in range(5)]
    for visible, infrared, visible_log, infrared_log in first:
        assert visible_log > visible and infrared_log > infrared
    with pytest.raises(BagError, match='half a frame'):
        StampModel(rate_hz=100.0, infrared_offset_s=0.006).frame_stamps(0)


def test_info_counts_rates_duration(tmp_path: Path) -> None:
    bagio.write_pairs(tmp_path / 'bag', random_pairs(6), stamps=StampModel(rate_hz=20.0))
    info = bagio.bag_info(tmp_path / 'bag')
    assert info.message_count == 12
    assert set(info.topics) == {VISIBLE_TOPIC, INFRARED_TOPIC}
    for topic in info.topics.values():
        assert topic.msgtype == bagio.IMAGE and topic.count == 6
        assert topic.rate_hz == pytest.approx(20.0, rel=0.05)
    assert info.duration_s == pytest.approx(0.25 + 0.004, abs=0.004)
    text = bagio.format_info(info)
    assert VISIBLE_TOPIC in text and 'reliable/depth 10' in text


@pytest.mark.parametrize('reliability', ['reliable', 'best_effort'])
def test_qos_metadata_like_a_camera_driver_recording(tmp_path: Path, reliability: str) -> None:
    cameras = CameraTopics(reliability=reliability, depth=5)
    bagio.write_pairs(tmp_path / 'bag', random_pairs(2), cameras=cameras)
    metadata = yaml.safe_load((tmp_path / 'bag' / 'metadata.yaml').read_text())
    info = metadata['rosbag2_bagfile_information']
    assert info['version'] == 9
    for entry in info['topics_with_message_count']:
        topic = entry['topic_metadata']
        assert topic['type_description_hash'].startswith('RIHS01_')
        (profile,) = topic['offered_qos_profiles']
        assert profile['reliability'] == reliability
        assert profile['history'] == 'keep_last' and profile['depth'] == 5
        assert profile['durability'] == 'volatile'
        assert profile['deadline'] == {'sec': 9223372036, 'nsec': 854775807}
    with BagReader(tmp_path / 'bag') as reader:
        (qos,) = reader.qos(VISIBLE_TOPIC)
        assert qos.reliability.name.lower() == reliability and qos.depth == 5
    with pytest.raises(BagError, match='reliability'):
        bagio.camera_qos('sometimes')


def test_mcap_reads_back_with_mcap_ros2_support(tmp_path: Path) -> None:
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory

    pairs = random_pairs(3)
    bagio.write_pairs(tmp_path / 'bag', pairs, storage='mcap')
    (mcap_file,) = (tmp_path / 'bag').glob('*.mcap')
    with mcap_file.open('rb') as stream:
        reader = make_reader(stream, decoder_factories=[DecoderFactory()])
        visible = [message for _, channel, _, message in reader.iter_decoded_messages()
                   if channel.topic == VISIBLE_TOPIC]
    assert len(visible) == 3
    message = visible[0]
    assert (message.height, message.width, message.encoding) == (HEIGHT, WIDTH, 'rgb8')
    assert message.header.frame_id == bagio.VISIBLE_FRAME_ID
    image = np.frombuffer(bytes(message.data), np.uint8).reshape(HEIGHT, WIDTH, 3)
    assert np.array_equal(image, pairs[0][0])


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_compressed_images(tmp_path: Path, storage: str) -> None:
    pairs = random_pairs(2, thermal_bits=16)
    pairs = [(np.full_like(vis, 90), ir) for vis, ir in pairs]  # flat: JPEG reproduces it
    bagio.write_pairs(tmp_path / 'bag', pairs, storage=storage,
                      cameras=CameraTopics(compressed=True))
    with BagReader(tmp_path / 'bag') as reader:
        assert reader.topics == {VISIBLE_TOPIC + '/compressed': bagio.COMPRESSED_IMAGE,
                                 INFRARED_TOPIC + '/compressed': bagio.COMPRESSED_IMAGE}
        visible = list(reader.frames(VISIBLE_TOPIC + '/compressed'))
        infrared = list(reader.frames(INFRARED_TOPIC + '/compressed'))
    assert visible[0].array.shape == (HEIGHT, WIDTH, 3)
    assert np.abs(visible[0].array.astype(int) - 90).max() <= 2
    assert infrared[1].encoding == 'mono16'
    assert np.array_equal(infrared[1].array, pairs[1][1])  # PNG is lossless for 16-bit


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_detections_round_trip(tmp_path: Path, storage: str) -> None:
    detections = [Detection(0, 'person', 0.9, 10.5, 20.0, 8.0, 16.0),
                  Detection(2, 'car', 0.5, 40.0, 30.0, 20.0, 10.0)]
    with BagWriter(tmp_path / 'bag', storage) as writer:
        writer.add_topic('/detections', bagio.DETECTIONS, bagio.camera_qos('reliable'))
        writer.write('/detections', 5, bagio.detections_message(detections, 123, 'cam'))
        writer.write('/detections', 6, bagio.detections_message([], 124, 'cam'))
    with BagReader(tmp_path / 'bag') as reader:
        assert reader.topics == {'/detections': bagio.DETECTIONS}
        messages = [reader.decode(message) for message in reader.messages()]
    assert [bagio.join_stamp(message.header.stamp) for message in messages] == [123, 124]
    boxes = bagio.detections_from_message(messages[0])
    assert [box.class_id for box in boxes] == ['person', 'car']
    assert boxes[0].score == pytest.approx(0.9) and boxes[0].cx == 10.5
    assert (boxes[1].width, boxes[1].height) == (20.0, 10.0)
    assert messages[0].detections[0].header.frame_id == 'cam'
    assert bagio.detections_from_message(messages[1]) == []


@pytest.mark.ros
def test_detections_match_rclpy_vision_msgs_hash_and_bytes() -> None:
    """Our .msg text gives the real package's RIHS01 hash, and rclpy reads our CDR bytes."""
    pytest.importorskip('vision_msgs.msg', reason='needs vision_msgs (scripts/setup.sh builds it)')
    import rclpy
    from rclpy.node import Node
    from rclpy.serialization import deserialize_message
    from vision_msgs.msg import Detection2DArray

    rclpy.init()
    try:
        node = Node('hash_probe')
        node.create_publisher(Detection2DArray, 'hash_probe', 1)
        (info,) = node.get_publishers_info_by_topic('/hash_probe')
        assert str(info.topic_type_hash) == bagio.typestore().hash_rihs01(bagio.DETECTIONS)
        node.destroy_node()
    finally:
        rclpy.shutdown()
    raw = bagio.serialize(bagio.detections_message(
        [Detection(1, 'bicycle', 0.75, 3.0, 4.0, 5.0, 6.0)], 1_500_000_000, 'cam'))
    message = deserialize_message(raw, Detection2DArray)
    (detection,) = message.detections
    assert detection.results[0].hypothesis.class_id == 'bicycle'
    assert detection.bbox.center.position.x == 3.0 and detection.bbox.size_y == 6.0
    assert (message.header.stamp.sec, message.header.stamp.nanosec) == (1, 500_000_000)


def test_reads_a_humble_style_bag_without_type_hashes(tmp_path: Path) -> None:
    """`ros2 bag record` of older distros: metadata v8, no message definitions stored."""
    store = rosbags_typestore(Stores.ROS2_HUMBLE)
    image = bagio.image_message(np.zeros((4, 6), np.uint8), 'mono8', 77, 'ir')
    writer = Writer(tmp_path / 'old', version=8, storage_plugin=StoragePlugin.SQLITE3)
    writer.open()
    connection = writer.add_connection(INFRARED_TOPIC, bagio.IMAGE, typestore=store)
    writer.write(connection, 100, bagio.serialize(image))
    writer.close()
    with BagReader(tmp_path / 'old') as reader:
        (frame,) = reader.frames(INFRARED_TOPIC)
    assert frame.stamp_ns == 77 and frame.array.shape == (4, 6)


def test_time_order_across_topics_written_out_of_order(tmp_path: Path) -> None:
    with BagWriter(tmp_path / 'bag', 'mcap') as writer:
        writer.add_topic('/a', bagio.CLOCK)
        writer.add_topic('/b', bagio.CLOCK)
        for log_time, topic in [(30, '/a'), (10, '/b'), (20, '/a'), (5, '/b')]:
            writer.write(topic, log_time, bagio.clock_message(log_time))
    with BagReader(tmp_path / 'bag') as reader:
        order = [(message.log_time_ns, message.topic) for message in reader.messages()]
        assert [time for time, _ in order] == [5, 10, 20, 30]
        assert [message.log_time_ns for message in reader.messages(['/a'], start_ns=25)] == [30]


def test_clear_errors(tmp_path: Path) -> None:
    with pytest.raises(BagError, match='no bag'):
        BagReader(tmp_path / 'missing')
    bagio.write_pairs(tmp_path / 'bag', random_pairs(1))
    with pytest.raises(BagError, match='exists'):
        bagio.write_pairs(tmp_path / 'bag', random_pairs(1))
    with BagReader(tmp_path / 'bag') as reader:
        with pytest.raises(BagError, match='no topic'):
            list(reader.messages(['/nope']))
        with pytest.raises(BagError, match='not an image topic'):
            list(reader.frames('/nope'))
    bad = [(np.zeros((HEIGHT, WIDTH), np.uint8), np.zeros((HEIGHT, WIDTH), np.uint8))]
    with pytest.raises(BagError, match='visible frame 0'):
        bagio.write_pairs(tmp_path / 'bad', bad)
    with pytest.raises(BagError, match='unknown storage'):
        BagWriter(tmp_path / 'x', 'rosbag1')  # type: ignore[arg-type]
    with BagWriter(tmp_path / 'y') as writer, pytest.raises(BagError, match='unknown message'):
        writer.add_topic('/t', 'my_msgs/msg/Nope')


def test_synthetic_night_drive_moves(tmp_path: Path) -> None:
    counts = bagio.write_pairs(tmp_path / 'bag', bagio.synthetic_pairs(2, WIDTH, HEIGHT))
    assert counts[VISIBLE_TOPIC] == 2
    with BagReader(tmp_path / 'bag') as reader:
        frames = list(reader.frames(INFRARED_TOPIC))
    assert not np.array_equal(frames[0].array, frames[1].array)


def test_folder_pairs_from_the_shared_datasets(datasets: Path) -> None:
    pairs = list(bagio.folder_pairs(datasets / 'msrs', count=2, size=(80, 60), night_only=True))
    assert len(pairs) == 2
    assert pairs[0][0].shape == (60, 80, 3) and pairs[0][1].shape == (60, 80)


def copy_as_crashed(live: Path, crashed: Path) -> Path:
    """Copy a bag's storage file (no metadata.yaml) as a kill would leave it on disk."""
    crashed.mkdir()
    for file in live.iterdir():
        if file.suffix in ('.db3', '.mcap'):
            shutil.copyfile(file, crashed / f'{crashed.name}{file.suffix}')
    return crashed


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_reindex_recovers_what_was_flushed_before_a_crash(tmp_path: Path, storage: str) -> None:
    writer = BagWriter(tmp_path / 'live', storage).__enter__()
    writer.add_topic('/cam', bagio.IMAGE)
    pairs = list(bagio.synthetic_pairs(7, 32, 24))
    for index, (visible, _) in enumerate(pairs):
        msg = bagio.image_message(visible, 'rgb8', index * 100_000_000, 'cam')
        writer.write('/cam', index * 100_000_000, msg)
        if index == 4:
            writer.flush()
    # The process dies here: copy what is on disk, as a kill would leave it (no metadata.yaml).
    crashed = copy_as_crashed(tmp_path / 'live', tmp_path / 'crashed')
    assert bagio.needs_reindex(crashed)
    result = bagio.reindex(crashed)
    assert result.counts == {'/cam': 5}
    assert not bagio.needs_reindex(crashed)
    with BagReader(crashed) as reader:
        assert reader.counts == {'/cam': 5} and reader.storage == storage
    # The original stays beside the rebuilt bag: what could not be read is only there.
    assert result.original == tmp_path / 'crashed.before-reindex'
    assert sorted(p.name for p in tmp_path.iterdir()) == ['crashed', 'crashed.before-reindex',
                                                          'live']
    (crashed / 'metadata.yaml').unlink()
    with pytest.raises(BagError, match='an earlier reindex kept the original'):
        bagio.reindex(crashed)
    with pytest.raises(BagError, match='no rosbag2 storage file'):
        bagio.reindex(tmp_path / 'nowhere')
    (tmp_path / 'garbage').mkdir()
    (tmp_path / 'garbage' / 'garbage.db3').write_bytes(b'not a database' * 100)
    with pytest.raises(BagError, match='cannot read'):
        bagio.reindex(tmp_path / 'garbage')


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_reindex_refuses_a_bag_that_is_being_written(tmp_path: Path, storage: str) -> None:
    writer = BagWriter(tmp_path / 'live', storage).__enter__()
    writer.add_topic('/cam', bagio.IMAGE)
    visible, _ = next(iter(bagio.synthetic_pairs(1, 32, 24)))
    writer.write('/cam', 0, bagio.image_message(visible, 'rgb8', 0, 'cam'))
    with pytest.raises(BagError, match='is being written'):
        bagio.reindex(tmp_path / 'live')
    writer.flush()          # committed, idle between two messages: still refused
    with pytest.raises(BagError, match='is being written'):
        bagio.reindex(tmp_path / 'live')
    writer.write('/cam', 1, bagio.image_message(visible, 'rgb8', 1, 'cam'))
    writer.close()     # the writer was left alone: it still closes a complete bag
    with BagReader(tmp_path / 'live') as reader:
        assert reader.counts == {'/cam': 2}


def test_reindex_reports_a_damaged_mcap_chunk_and_keeps_the_original(tmp_path: Path) -> None:
    # Ten chunks; one byte of the third chunk's length flipped: reading stops there, and the
    # seven chunks after it must be reported, not silently lost with the original.
    with BagWriter(tmp_path / 'live', 'mcap') as writer:
        writer.add_topic('/clock', 'rosgraph_msgs/msg/Clock')
        for chunk in range(10):
            for index in range(100):
                stamp = (chunk * 100 + index) * 1000
                writer.write('/clock', stamp, bagio.clock_message(stamp))
            writer.flush()
    bag = tmp_path / 'damaged'
    bag.mkdir()
    data = bytearray((tmp_path / 'live' / 'live.mcap').read_bytes())
    starts = []                  # record = opcode (1 byte) + length (8, little-endian) + body
    position = 8                 # after the magic
    while position + 9 <= len(data):
        if data[position] == 0x06:                  # a chunk record
            starts.append(position)
        position += 9 + int.from_bytes(data[position + 1:position + 9], 'little')
    assert len(starts) == 10
    data[starts[2] + 8] ^= 0x40                     # the chunk length's top byte
    (bag / 'damaged.mcap').write_bytes(bytes(data))
    result = bagio.reindex(bag)
    assert result.counts == {'/clock': 200}
    assert len(result.unread) == 1 and 'could not be read' in result.unread[0]
    assert (result.original / 'damaged.mcap').read_bytes() == bytes(data)


@pytest.mark.parametrize('storage', ['sqlite3', 'mcap'])
def test_reindex_keeps_topics_that_have_no_messages(tmp_path: Path, storage: str) -> None:
    writer = BagWriter(tmp_path / 'live', storage).__enter__()
    writer.add_topic('/clock', 'rosgraph_msgs/msg/Clock')
    writer.add_topic('/detections', bagio.DETECTIONS)
    writer.write('/clock', 1, bagio.clock_message(1))
    writer.flush()
    crashed = copy_as_crashed(tmp_path / 'live', tmp_path / 'crashed')
    writer.close()
    bagio.reindex(crashed)
    with BagReader(crashed) as reader:
        assert reader.counts == {'/clock': 1, '/detections': 0}


def test_reindex_leaves_out_an_idle_topic_of_a_foreign_type_and_names_it(tmp_path: Path) -> None:
    import sqlite3

    writer = BagWriter(tmp_path / 'live', 'sqlite3').__enter__()
    writer.add_topic('/clock', 'rosgraph_msgs/msg/Clock')
    writer.write('/clock', 1, bagio.clock_message(1))
    writer.flush()
    crashed = copy_as_crashed(tmp_path / 'live', tmp_path / 'crashed')
    writer.close()
    # ros2 bag record declares every subscribed topic, also one of a vendor type that never sent.
    with sqlite3.connect(str(crashed / 'crashed.db3')) as database:
        database.execute("INSERT INTO topics (name, type, serialization_format, "
                         "offered_qos_profiles, type_description_hash) VALUES "
                         "('/vendor/status', 'vendor_msgs/msg/Status', 'cdr', '', '')")
    result = bagio.reindex(crashed)
    assert result.counts == {'/clock': 1}
    assert result.unread == ['/vendor/status (vendor_msgs/msg/Status): declared, no messages, '
                             'no definition here: left out']


def test_overwrite_refuses_a_bag_being_written_and_a_folder_that_is_no_bag(
        tmp_path: Path) -> None:
    live = BagWriter(tmp_path / 'live', 'sqlite3').__enter__()
    live.add_topic('/clock', 'rosgraph_msgs/msg/Clock')
    live.write('/clock', 1, bagio.clock_message(1))
    live.flush()
    with pytest.raises(BagError, match='being written'):
        BagWriter(tmp_path / 'live', 'sqlite3', overwrite=True)
    live.write('/clock', 2, bagio.clock_message(2))     # the recording goes on unharmed
    live.close()
    with BagReader(tmp_path / 'live') as reader:
        assert reader.counts == {'/clock': 2}
    BagWriter(tmp_path / 'live', 'sqlite3', overwrite=True).__enter__().close()   # now it may
    (tmp_path / 'home').mkdir()
    (tmp_path / 'home' / 'notes.txt').write_text('not a bag')
    with pytest.raises(BagError, match='not a bag folder'):
        BagWriter(tmp_path / 'home', 'sqlite3', overwrite=True)
    assert (tmp_path / 'home' / 'notes.txt').exists()
    with pytest.raises(BagError, match='is a file, not a bag folder'):
        BagWriter(tmp_path / 'home' / 'notes.txt', 'sqlite3', overwrite=True)
    assert (tmp_path / 'home' / 'notes.txt').exists()


def test_made_bags_log_each_topic_in_order_even_when_latency_exceeds_a_period(
        tmp_path: Path) -> None:
    stamps = StampModel(rate_hz=1000.0, infrared_offset_s=0.0, jitter_s=0.0)
    bagio.write_pairs(tmp_path / 'bag', bagio.synthetic_pairs(60, 16, 16), stamps=stamps)
    with BagReader(tmp_path / 'bag') as reader:
        for topic in (VISIBLE_TOPIC, INFRARED_TOPIC):
            logs = [message.log_time_ns for message in reader.messages([topic])]
            assert logs == sorted(logs) and len(set(logs)) == len(logs)
            frames = [frame.stamp_ns for frame in reader.frames(topic)]
            assert frames == sorted(frames), topic
