"""rosbag2 files without ROS: camera images, detections and QoS metadata via `rosbags`."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
import fcntl
from functools import lru_cache
from pathlib import Path
import shutil
from typing import Any, BinaryIO, Literal, Protocol

import numpy as np
from rosbags.highlevel import AnyReader, AnyReaderError
from rosbags.interfaces import (
    Connection,
    ConnectionExtRosbag2,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import StoragePlugin, Writer, WriterError
from rosbags.typesys import get_types_from_msg, Stores
from rosbags.typesys import get_typestore as _rosbags_typestore
from rosbags.typesys.store import Typestore

from ivf_ros.io.errors import first_line
from ivf_ros.io.image_codec import (
    array_to_image_fields,
    decode_compressed,
    encode_compressed,
    message_to_array,
)

VISIBLE_TOPIC = '/camera/visible/image_raw'
INFRARED_TOPIC = '/camera/infrared/image_raw'
VISIBLE_FRAME_ID = 'camera_visible_optical_frame'
INFRARED_FRAME_ID = 'camera_infrared_optical_frame'
IMAGE = 'sensor_msgs/msg/Image'
COMPRESSED_IMAGE = 'sensor_msgs/msg/CompressedImage'
DETECTIONS = 'vision_msgs/msg/Detection2DArray'
CLOCK = 'rosgraph_msgs/msg/Clock'
IMAGE_TYPES = (IMAGE, COMPRESSED_IMAGE)
STORAGES: dict[str, StoragePlugin] = {
    'sqlite3': StoragePlugin.SQLITE3,
    'mcap': StoragePlugin.MCAP,
}
Storage = Literal['sqlite3', 'mcap']
# rosbag2 writes "infinite" QoS durations as RMW_DURATION_INFINITE split into sec/nsec; a bag
# that carries these looks exactly like one `ros2 bag record` made.
INFINITE = QosTime(sec=9223372036, nsec=854775807)

# vision_msgs 4.x (Humble and later) as .msg text, so rosbags can write and read detections
# without a ROS install; the field layout gives the same RIHS01 hash as the real package.
VISION_MSGS: dict[str, str] = {
    'vision_msgs/msg/Point2D': 'float64 x\nfloat64 y\n',
    'vision_msgs/msg/Pose2D': 'vision_msgs/Point2D position\nfloat64 theta\n',
    'vision_msgs/msg/BoundingBox2D': (
        'vision_msgs/Pose2D center\nfloat64 size_x\nfloat64 size_y\n'),
    'vision_msgs/msg/ObjectHypothesis': 'string class_id\nfloat64 score\n',
    'vision_msgs/msg/ObjectHypothesisWithPose': (
        'vision_msgs/ObjectHypothesis hypothesis\ngeometry_msgs/PoseWithCovariance pose\n'),
    'vision_msgs/msg/Detection2D': (
        'std_msgs/Header header\nvision_msgs/ObjectHypothesisWithPose[] results\n'
        'vision_msgs/BoundingBox2D bbox\nstring id\n'),
    'vision_msgs/msg/Detection2DArray': (
        'std_msgs/Header header\nvision_msgs/Detection2D[] detections\n'),
}


class BagError(RuntimeError):
    """A bag is missing, malformed, or lacks what was asked of it."""


class DetectionLike(Protocol):
    """What a detection must offer to become a vision_msgs/Detection2D (pixels)."""

    class_id: int
    class_name: str
    score: float
    cx: float
    cy: float
    width: float
    height: float


@lru_cache(maxsize=1)
def typestore() -> Typestore:
    """Return the ROS 2 Kilted typestore with vision_msgs registered."""
    store = _rosbags_typestore(Stores.ROS2_KILTED)
    types: dict[str, Any] = {}
    for name, text in VISION_MSGS.items():
        types.update(get_types_from_msg(text, name))
    store.register(types)
    return store


def camera_qos(reliability: str = 'reliable', depth: int = 10) -> Qos:
    """Return the QoS profile a camera driver offers (as `ros2 bag record` stores it)."""
    try:
        reliability_value = QosReliability[reliability.upper()]
    except KeyError:
        raise BagError(
            f'unknown QoS reliability {reliability!r}: use reliable or best_effort') from None
    if depth < 1:
        raise BagError(f'QoS depth must be >= 1, got {depth}')
    return Qos(
        history=QosHistory.KEEP_LAST, depth=depth, reliability=reliability_value,
        durability=QosDurability.VOLATILE, deadline=INFINITE, lifespan=INFINITE,
        liveliness=QosLiveliness.AUTOMATIC, liveliness_lease_duration=INFINITE,
        avoid_ros_namespace_conventions=False)


def split_stamp(stamp_ns: int) -> tuple[int, int]:
    """Split nanoseconds into builtin_interfaces/Time (sec, nanosec)."""
    return int(stamp_ns // 1_000_000_000), int(stamp_ns % 1_000_000_000)


def join_stamp(stamp: Any) -> int:
    """Return a builtin_interfaces/Time as nanoseconds."""
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _header(stamp_ns: int, frame_id: str) -> Any:
    store = typestore()
    sec, nanosec = split_stamp(stamp_ns)
    time = store.types['builtin_interfaces/msg/Time'](sec=sec, nanosec=nanosec)
    return store.types['std_msgs/msg/Header'](stamp=time, frame_id=frame_id)


def serialize(message: Any) -> bytes:
    """Serialize a rosbags message to CDR bytes (what DDS carries and bags store)."""
    return bytes(typestore().serialize_cdr(message, message.__msgtype__))


def image_message(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str) -> Any:
    """Return a sensor_msgs/Image for an array (via image_codec)."""
    fields = array_to_image_fields(array, encoding)
    return typestore().types[IMAGE](
        header=_header(stamp_ns, frame_id), height=fields.height, width=fields.width,
        encoding=fields.encoding, is_bigendian=int(fields.is_bigendian), step=fields.step,
        data=np.frombuffer(fields.data, np.uint8))


def compressed_message(array: np.ndarray, encoding: str, stamp_ns: int, frame_id: str,
                       fmt: str = 'jpeg') -> Any:
    """Return a sensor_msgs/CompressedImage for an array (format as image_transport writes)."""
    format_string, data = encode_compressed(array, encoding, fmt)
    return typestore().types[COMPRESSED_IMAGE](
        header=_header(stamp_ns, frame_id), format=format_string,
        data=np.frombuffer(data, np.uint8))


def detections_message(detections: Iterable[DetectionLike], stamp_ns: int, frame_id: str,
                       class_id_as: Literal['name', 'id'] = 'name') -> Any:
    """Return a vision_msgs/Detection2DArray (boxes in pixels, header as the source image)."""
    types = typestore().types
    header = _header(stamp_ns, frame_id)
    items = []
    for detection in detections:
        class_id = detection.class_name if class_id_as == 'name' else str(detection.class_id)
        hypothesis = types['vision_msgs/msg/ObjectHypothesisWithPose'](
            hypothesis=types['vision_msgs/msg/ObjectHypothesis'](
                class_id=class_id, score=float(detection.score)),
            pose=_zero_pose_with_covariance())
        center = types['vision_msgs/msg/Pose2D'](
            position=types['vision_msgs/msg/Point2D'](
                x=float(detection.cx), y=float(detection.cy)), theta=0.0)
        box = types['vision_msgs/msg/BoundingBox2D'](
            center=center, size_x=float(detection.width), size_y=float(detection.height))
        items.append(types['vision_msgs/msg/Detection2D'](
            header=header, results=[hypothesis], bbox=box, id=''))
    return types[DETECTIONS](header=header, detections=items)


def _zero_pose_with_covariance() -> Any:
    types = typestore().types
    pose = types['geometry_msgs/msg/Pose'](
        position=types['geometry_msgs/msg/Point'](x=0.0, y=0.0, z=0.0),
        orientation=types['geometry_msgs/msg/Quaternion'](x=0.0, y=0.0, z=0.0, w=1.0))
    return types['geometry_msgs/msg/PoseWithCovariance'](
        pose=pose, covariance=np.zeros(36, np.float64))


def clock_message(stamp_ns: int) -> Any:
    """Return a rosgraph_msgs/Clock for a time in nanoseconds."""
    sec, nanosec = split_stamp(stamp_ns)
    store = typestore()
    return store.types[CLOCK](clock=store.types['builtin_interfaces/msg/Time'](
        sec=sec, nanosec=nanosec))


@dataclass(frozen=True)
class CameraFrame:
    """One decoded camera image: header stamp, frame_id, pixels and their encoding."""

    stamp_ns: int
    frame_id: str
    array: np.ndarray  # (h, w) or (h, w, c)
    encoding: str


@dataclass(frozen=True)
class BoxDetection:
    """One detection read back from a vision_msgs/Detection2D (pixels)."""

    class_id: str
    score: float
    cx: float
    cy: float
    width: float
    height: float


def frame_from_message(message: Any) -> CameraFrame:
    """Decode a rosbags sensor_msgs/Image or CompressedImage into a CameraFrame."""
    msgtype = getattr(message, '__msgtype__', '')
    stamp_ns = join_stamp(message.header.stamp)
    if msgtype == IMAGE:
        array = message_to_array(message)
        return CameraFrame(stamp_ns, message.header.frame_id, array, message.encoding)
    if msgtype == COMPRESSED_IMAGE:
        array, encoding = decode_compressed(message.format, bytes(message.data))
        return CameraFrame(stamp_ns, message.header.frame_id, array, encoding)
    raise BagError(f'not an image message: {msgtype or type(message).__name__}')


def detections_from_message(message: Any) -> list[BoxDetection]:
    """Return the best hypothesis of every Detection2D in a Detection2DArray."""
    boxes = []
    for detection in message.detections:
        best = max(detection.results, key=lambda result: result.hypothesis.score, default=None)
        boxes.append(BoxDetection(
            class_id=best.hypothesis.class_id if best else '',
            score=float(best.hypothesis.score) if best else 0.0,
            cx=float(detection.bbox.center.position.x),
            cy=float(detection.bbox.center.position.y),
            width=float(detection.bbox.size_x), height=float(detection.bbox.size_y)))
    return boxes


class BagWriter:
    """Write a rosbag2 (sqlite3 or MCAP, CDR) with offered QoS metadata; a context manager."""

    def __init__(self, path: str | Path, storage: Storage = 'sqlite3',
                 overwrite: bool = False) -> None:
        if storage not in STORAGES:
            raise BagError(f'unknown storage {storage!r}: use one of {sorted(STORAGES)}')
        self.path = Path(path)
        if self.path.exists():
            if not overwrite:
                raise BagError(f'{self.path} exists (pass overwrite=True / --overwrite)')
            _remove_bag(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self._writer = Writer(self.path, version=9, storage_plugin=STORAGES[storage])
        self._connections: dict[str, Connection] = {}
        self.counts: dict[str, int] = {}
        self._lock: BinaryIO | None = None

    def __enter__(self) -> BagWriter:
        self._writer.open()
        # An advisory lock on the storage file for as long as it is written: reindex and an
        # overwriting writer take it without waiting, so they refuse a bag still being written.
        try:
            self._lock = _lock_storage(self.path)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        """Close the storage and write metadata.yaml."""
        if self._writer.storage is not None:
            self._writer.close()
            self._writer.storage = None
        if self._lock is not None:
            self._lock.close()       # closing the descriptor releases the lock
            self._lock = None

    def flush(self) -> None:
        """Make what was written so far survive a crash (sqlite3 commit; MCAP chunk to disk).

        metadata.yaml is written at close only; a bag cut short by a kill is read again after
        :func:`reindex`.
        """
        storage = self._writer.storage
        if storage is None:
            return
        # rosbags writes one sqlite3 transaction per bag and one MCAP chunk per MiB; neither has
        # a public flush, so this reaches into its storage objects (rosbags 0.11).
        if hasattr(storage, 'conn'):
            storage.conn.commit()
        elif hasattr(storage, 'close_chunk'):
            if storage.chunk.msgs:
                storage.close_chunk()
            storage.bio.flush()

    def add_topic(self, topic: str, msgtype: str, qos: Sequence[Qos] | Qos | None = None,
                  msgdef: str | None = None, rihs01: str | None = None) -> None:
        """Register a topic; msgdef/rihs01 default to the typestore's definition."""
        if topic in self._connections:
            raise BagError(f'topic {topic} added twice')
        profiles = [qos] if isinstance(qos, Qos) else list(qos or [camera_qos()])
        try:
            if msgdef is None or rihs01 is None:
                if msgtype not in typestore().fielddefs:
                    raise BagError(f'unknown message type {msgtype} for {topic}')
                self._connections[topic] = self._writer.add_connection(
                    topic, msgtype, typestore=typestore(), offered_qos_profiles=profiles)
            else:
                self._connections[topic] = self._writer.add_connection(
                    topic, msgtype, msgdef=msgdef, rihs01=rihs01, offered_qos_profiles=profiles)
        except WriterError as error:
            raise BagError(f'cannot add {topic} ({msgtype}) to {self.path}: {error}') from None
        self.counts[topic] = 0

    def has_topic(self, topic: str) -> bool:
        """Return whether a topic was added."""
        return topic in self._connections

    def write_raw(self, topic: str, log_time_ns: int, data: bytes | memoryview) -> None:
        """Write one serialized (CDR) message received at log_time_ns."""
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f'topic {topic} was not added to {self.path}')
        self._writer.write(connection, int(log_time_ns), data)
        self.counts[topic] += 1

    def write(self, topic: str, log_time_ns: int, message: Any) -> None:
        """Serialize and write one rosbags message."""
        self.write_raw(topic, log_time_ns, serialize(message))


def needs_reindex(path: str | Path) -> bool:
    """Return whether path is a bag folder with a storage file but no metadata.yaml."""
    path = Path(path)
    if not path.is_dir() or (path / 'metadata.yaml').exists():
        return False
    return any(path.glob('*.db3')) or any(path.glob('*.mcap'))


@dataclass(frozen=True)
class _StoredRecord:
    """A topic a storage file declares (raw None) or one of its messages."""

    topic: str
    msgtype: str
    qos: list[Qos]
    log_time_ns: int = 0
    raw: bytes | None = None


def _sqlite_messages(database: Path, unread: list[str]) -> Iterator[_StoredRecord]:
    """Yield the topics, then the messages in log-time order, of a rosbag2 sqlite3 file."""
    import sqlite3

    from rosbags.rosbag2.metadata import parse_qos

    # Read-write: sqlite rolls back the journal of a transaction a kill left open.
    connection = sqlite3.connect(str(database))
    try:
        topics = {row[0]: _StoredRecord(row[1], row[2], parse_qos(row[3] or []))
                  for row in connection.execute(
                      'SELECT id, name, type, offered_qos_profiles FROM topics')}
        yield from topics.values()
        for topic_id, stamp, data in connection.execute(
                'SELECT topic_id, timestamp, data FROM messages ORDER BY timestamp, id'):
            if topic_id in topics:
                yield replace(topics[topic_id], log_time_ns=int(stamp), raw=bytes(data))
            else:
                unread.append(f'{database.name}: a message of unknown topic id {topic_id}')
    except sqlite3.DatabaseError as error:
        raise BagError(f'cannot read {database}: {error}') from None
    finally:
        connection.close()


def _mcap_messages(file: Path, unread: list[str]) -> Iterator[_StoredRecord]:
    """Yield the channels and messages of an MCAP file read linearly (no index needed).

    Reading stops at the first record that cannot be read: a file cut short ends in one, but
    a damaged chunk can sit anywhere, so what was left unread is added to ``unread``.
    """
    from mcap.records import Channel, Message, Schema
    from mcap.stream_reader import StreamReader
    from rosbags.rosbag2.metadata import parse_qos

    schemas: dict[int, str] = {}
    channels: dict[int, _StoredRecord] = {}
    size = file.stat().st_size
    with file.open('rb') as handle:
        records = StreamReader(handle, emit_chunks=False).records
        read_up_to = 0
        while True:
            try:
                record = next(records)
            except StopIteration:
                return
            except Exception as error:  # noqa: BLE001 - the mcap reader raises many types
                if read_up_to < size:
                    unread.append(f'{file.name}: {size - read_up_to} of {size} bytes after '
                                  f'byte {read_up_to} could not be read '
                                  f'({type(error).__name__}: {first_line(error)})')
                return
            read_up_to = handle.tell()
            if isinstance(record, Schema):
                schemas[record.id] = record.name
            elif isinstance(record, Channel):
                qos = parse_qos(record.metadata.get('offered_qos_profiles', '') or [])
                channels[record.id] = _StoredRecord(
                    record.topic, schemas.get(record.schema_id, ''), qos)
                yield channels[record.id]
            elif isinstance(record, Message) and record.channel_id in channels:
                yield replace(channels[record.channel_id], log_time_ns=int(record.log_time),
                              raw=bytes(record.data))


def _copy_messages(sources: list[Path], storage: Storage, target: Path,
                   skipped: set[str], unread: list[str]) -> dict[str, int]:
    """Write what the storage files hold into a new bag at target; return counts by topic."""
    reader = _sqlite_messages if storage == 'sqlite3' else _mcap_messages
    undefined: dict[str, str] = {}   # declared topics of a type ivf_ros has no definition for
    with BagWriter(target, storage) as writer:
        for source in sources:
            for record in reader(source, unread):
                if not writer.has_topic(record.topic):
                    if record.msgtype not in typestore().fielddefs:
                        name = f'{record.topic} ({record.msgtype or "unknown type"})'
                        undefined[record.topic] = name
                        if record.raw is not None:      # a message that cannot be copied
                            skipped.add(name)
                        continue
                    # Every declared topic, messages or not: the rebuilt bag lists what the
                    # recording did.
                    writer.add_topic(record.topic, record.msgtype, record.qos or None)
                if record.raw is not None:
                    writer.write_raw(record.topic, record.log_time_ns, record.raw)
        # An idle topic of a foreign type (ros2 bag record declares every subscription) has
        # nothing to lose: it is left out and named, and the rest is recovered.
        unread.extend(f'{name}: declared, no messages, no definition here: left out'
                      for name in undefined.values() if name not in skipped)
        return dict(writer.counts)


def _exclusive_lock(file: Path, message: str) -> BinaryIO:
    """Return file opened with an exclusive advisory lock taken without waiting; BagError."""
    handle = file.open('rb')
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        handle.close()
        raise BagError(message) from None
    return handle


def _lock_storage(path: Path) -> BinaryIO | None:
    """Hold an exclusive advisory lock on a bag folder's storage file; None if it has none."""
    files = sorted(path.glob('*.db3')) + sorted(path.glob('*.mcap'))
    if not files:
        return None
    return _exclusive_lock(files[0], f'{files[0]} is being written by another writer')


def _refuse_if_being_written(storage_file: Path) -> None:
    """Raise BagError when a writer still has a bag's storage file open (sqlite3 or MCAP)."""
    import sqlite3

    # An ivf_ros writer (ivf-bag record, make, process) holds an advisory lock for its whole
    # life; a foreign sqlite writer shows while it holds sqlite's write lock (best effort).
    _exclusive_lock(storage_file, f'{storage_file} is being written: stop the recorder, then '
                    'reindex').close()
    if storage_file.suffix != '.db3':
        return
    connection = sqlite3.connect(str(storage_file), timeout=0.0, isolation_level=None)
    try:
        connection.execute('BEGIN IMMEDIATE')
        connection.execute('ROLLBACK')
    except sqlite3.OperationalError as error:
        raise BagError(f'{storage_file} is being written ({error}): stop the recorder, then '
                       'reindex') from None
    except sqlite3.DatabaseError as error:
        raise BagError(f'cannot read {storage_file}: {error}') from None
    finally:
        connection.close()


@dataclass(frozen=True)
class Reindexed:
    """What reindex rebuilt: messages per topic, what it could not read, the original's place."""

    counts: dict[str, int]
    unread: list[str]
    original: Path


# What a rosbag2 folder holds besides metadata.yaml: storage files (split, or compressed per
# file) and sqlite's journals.
_BAG_FILES = ('.db3', '.mcap', '.db3.zstd', '.mcap.zstd', '.db3-journal', '.db3-wal', '.db3-shm')


def _remove_bag(path: Path) -> None:
    """Delete a bag folder that an overwrite replaces; BagError if it is not a bag."""
    if not path.is_dir():
        raise BagError(f'{path} is a file, not a bag folder: refusing to overwrite it')
    foreign = [entry.name for entry in path.iterdir() if not (
        entry.is_file() and (entry.name == 'metadata.yaml' or entry.name.endswith(_BAG_FILES)))]
    if foreign:
        raise BagError(f'{path} is not a bag folder (it holds {", ".join(sorted(foreign)[:3])}): '
                       'refusing to overwrite it')
    lock = _lock_storage(path)      # BagError while an ivf_ros writer still records into it
    try:
        shutil.rmtree(path)
    finally:
        if lock is not None:
            lock.close()


def reindex(path: str | Path) -> Reindexed:
    """Rebuild a bag whose recording was cut short (no metadata.yaml); report what it read.

    The messages its storage file holds are written into a complete bag of the same storage,
    which takes its place (like ``ros2 bag reindex``, but also for an MCAP file without its
    summary); the original folder is kept beside it as ``<bag>.before-reindex``, since what
    could not be read (``Reindexed.unread``: a damaged MCAP chunk stops the reading) is only
    there. A bag that an ivf_ros writer still has open is refused (it holds an advisory lock),
    and so is a sqlite3 file another program holds sqlite's write lock on; a foreign MCAP
    writer cannot be seen, so reindex only once nothing records into the bag. A topic of a type
    ivf_ros has no definition for stops the reindex if it has messages, naming it (nothing is
    changed); without messages it is left out and named in ``unread``.
    """
    path = Path(path)
    databases, mcaps = sorted(path.glob('*.db3')), sorted(path.glob('*.mcap'))
    if not path.is_dir() or not (databases or mcaps):
        raise BagError(f'no rosbag2 storage file (*.db3, *.mcap) in {path}')
    original = path.with_name(f'{path.name}.before-reindex')
    if original.exists():
        raise BagError(f'{original} exists (an earlier reindex kept the original there): '
                       'move or delete it first')
    storage: Storage = 'sqlite3' if databases else 'mcap'
    sources = databases or mcaps
    for storage_file in sources:
        _refuse_if_being_written(storage_file)
    # Built beside the bag under its own name: rosbags names the storage file after the folder.
    scratch = path.with_name(f'.{path.name}.reindexing')
    shutil.rmtree(scratch, ignore_errors=True)
    rebuilt = scratch / path.name
    skipped: set[str] = set()
    unread: list[str] = []
    try:
        counts = _copy_messages(sources, storage, rebuilt, skipped, unread)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    if skipped:
        shutil.rmtree(scratch)
        raise BagError(f'cannot reindex {path}: no message definition for {", ".join(skipped)}')
    path.rename(original)
    rebuilt.rename(path)
    scratch.rmdir()
    return Reindexed(counts, unread, original)


@dataclass(frozen=True)
class BagMessage:
    """One message of a bag in log-time order: raw CDR plus where it came from."""

    topic: str
    msgtype: str
    log_time_ns: int
    raw: bytes


@dataclass(frozen=True)
class TopicSummary:
    """What `ivf-bag info` prints for one topic."""

    name: str
    msgtype: str
    count: int
    rate_hz: float
    qos: list[Qos] = field(default_factory=list)


@dataclass(frozen=True)
class BagInfo:
    """Topics, counts, rates and duration of a bag."""

    path: Path
    storage: str
    start_ns: int
    end_ns: int
    message_count: int
    topics: dict[str, TopicSummary]

    @property
    def duration_s(self) -> float:
        """Return the time from the first to the last message in seconds."""
        return max(0, self.end_ns - self.start_ns) / 1e9


class BagReader:
    """Read any rosbag2 (sqlite3 or MCAP; ours or `ros2 bag record`'s); a context manager."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f'no bag at {self.path}')
        try:
            self._reader = AnyReader([self.path], default_typestore=typestore())
        except (AnyReaderError, FileNotFoundError) as error:
            raise BagError(f'cannot open bag {self.path}: {error}') from None

    def __enter__(self) -> BagReader:
        try:
            self._reader.open()
        except AnyReaderError as error:
            raise BagError(f'cannot read bag {self.path}: {error}') from None
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._reader.close()

    @property
    def storage(self) -> str:
        """Return the storage plugin id ('sqlite3' or 'mcap')."""
        files = [self.path] if self.path.is_file() else sorted(self.path.iterdir())
        return 'mcap' if any(path.suffix == '.mcap' for path in files) else 'sqlite3'

    @property
    def start_ns(self) -> int:
        """Return the log time of the first message (ns)."""
        return self._reader.start_time

    @property
    def topics(self) -> dict[str, str]:
        """Return topic -> message type."""
        return {connection.topic: connection.msgtype for connection in self._reader.connections}

    @property
    def counts(self) -> dict[str, int]:
        """Return topic -> message count (from the bag's index, without reading messages)."""
        return {topic: info.msgcount for topic, info in self._reader.topics.items()}

    def qos(self, topic: str) -> list[Qos]:
        """Return the offered QoS profiles recorded for a topic."""
        profiles: list[Qos] = []
        for connection in self._reader.connections:
            if connection.topic == topic and isinstance(connection.ext, ConnectionExtRosbag2):
                profiles.extend(connection.ext.offered_qos_profiles)
        return profiles

    def definition(self, topic: str) -> tuple[str, str, str]:
        """Return (msgtype, msgdef text, RIHS01 hash) of a topic, for copying it to another bag."""
        for connection in self._reader.connections:
            if connection.topic == topic:
                store = self._reader.typestore
                msgdef, _ = store.generate_msgdef(connection.msgtype, ros_version=2)
                return connection.msgtype, msgdef, connection.digest or store.hash_rihs01(
                    connection.msgtype)
        raise BagError(f'{self.path} has no topic {topic}')

    def messages(self, topics: Iterable[str] | None = None, start_ns: int | None = None,
                 stop_ns: int | None = None) -> Iterator[BagMessage]:
        """Yield raw messages in log-time order, optionally of some topics and a time window."""
        wanted = None if topics is None else set(topics)
        connections = [connection for connection in self._reader.connections
                       if wanted is None or connection.topic in wanted]
        if wanted is not None:
            missing = wanted - {connection.topic for connection in connections}
            if missing:
                raise BagError(f'{self.path} has no topic(s) {sorted(missing)}; '
                               f'it has {sorted(self.topics)}')
        if not connections:
            return
        for connection, log_time_ns, raw in self._reader.messages(
                connections, start=start_ns, stop=stop_ns):
            yield BagMessage(connection.topic, connection.msgtype, log_time_ns, bytes(raw))

    def decode(self, message: BagMessage) -> Any:
        """Deserialize a raw message with the bag's own type definitions."""
        try:
            # A writable buffer: decoded image arrays are then writable views (torch wants that).
            return self._reader.deserialize(bytearray(message.raw), message.msgtype)
        except AnyReaderError as error:
            raise BagError(
                f'malformed {message.msgtype} on {message.topic} in {self.path}: {error}'
            ) from None

    def frames(self, topic: str) -> Iterator[CameraFrame]:
        """Yield the decoded images of one Image or CompressedImage topic in order."""
        msgtype = self.topics.get(topic)
        if msgtype not in IMAGE_TYPES:
            raise BagError(f'{topic} in {self.path} is {msgtype or "absent"}, not an image topic')
        for message in self.messages([topic]):
            yield frame_from_message(self.decode(message))

    def info(self) -> BagInfo:
        """Return topics, types, counts, rates and duration (reads every log time once)."""
        times: dict[str, list[int]] = {topic: [] for topic in self.topics}
        for message in self.messages():
            times[message.topic].append(message.log_time_ns)
        summaries = {}
        for topic, msgtype in sorted(self.topics.items()):
            stamps = times[topic]
            span = (stamps[-1] - stamps[0]) / 1e9 if len(stamps) > 1 else 0.0
            rate = (len(stamps) - 1) / span if span > 0 else 0.0
            summaries[topic] = TopicSummary(topic, msgtype, len(stamps), rate, self.qos(topic))
        every = [stamp for stamps in times.values() for stamp in stamps]
        return BagInfo(self.path, self.storage, min(every, default=0), max(every, default=0),
                       len(every), summaries)


def bag_info(path: str | Path) -> BagInfo:
    """Return topics, types, counts, rates and duration of the bag at path."""
    with BagReader(path) as reader:
        return reader.info()


def format_info(info: BagInfo) -> str:
    """Return bag info as a table like `ros2 bag info` prints."""
    lines = [
        f'Files:     {info.path}',
        f'Storage:   {info.storage}',
        f'Duration:  {info.duration_s:.3f} s',
        f'Start:     {info.start_ns / 1e9:.3f}',
        f'End:       {info.end_ns / 1e9:.3f}',
        f'Messages:  {info.message_count}',
        'Topics:',
    ]
    width = max((len(name) for name in info.topics), default=0)
    for topic in info.topics.values():
        qos = ', '.join(f'{profile.reliability.name.lower()}/depth {profile.depth}'
                        for profile in topic.qos) or 'no QoS recorded'
        lines.append(f'  {topic.name:<{width}}  {topic.msgtype:<34} {topic.count:>6} msgs  '
                     f'{topic.rate_hz:6.2f} Hz  [{qos}]')
    return '\n'.join(lines)


@dataclass(frozen=True)
class StampModel:
    """How two free-running cameras stamp frames: rate, infrared offset, jitter, latency."""

    rate_hz: float = 10.0
    infrared_offset_s: float = 0.004
    jitter_s: float = 0.0005
    latency_s: float = 0.003  # capture -> recorder: the bag's log time trails the stamp
    start_ns: int = 1_763_900_000_000_000_000  # a fixed night in Nov 2025: reproducible bags
    seed: int = 0

    def frame_stamps(self, index: int) -> tuple[int, int, int, int]:
        """Return (visible stamp, infrared stamp, visible log time, infrared log time) in ns."""
        if self.rate_hz <= 0:
            raise BagError(f'rate must be > 0 Hz, got {self.rate_hz}')
        period = 1.0 / self.rate_hz
        if self.jitter_s < 0 or abs(self.infrared_offset_s) + 3 * self.jitter_s >= period / 2:
            raise BagError('infrared offset + 3 jitter must stay under half a frame period')
        # Seeded per frame: deterministic, and O(1) per frame for long generated drives.
        rng = np.random.default_rng([self.seed, index])
        jitter = rng.normal(0.0, self.jitter_s, 2).clip(-3 * self.jitter_s, 3 * self.jitter_s)
        latency = self.latency_s + np.abs(rng.normal(0.0, self.latency_s / 4, 2))
        visible = index * period + jitter[0]
        infrared = index * period + self.infrared_offset_s + jitter[1]
        visible_ns = self.start_ns + int(round(visible * 1e9))
        infrared_ns = self.start_ns + int(round(infrared * 1e9))
        return (visible_ns, infrared_ns, visible_ns + int(latency[0] * 1e9),
                infrared_ns + int(latency[1] * 1e9))


@dataclass(frozen=True)
class CameraTopics:
    """Topic names, frame ids and wire formats of the two cameras in a made bag."""

    visible_topic: str = VISIBLE_TOPIC
    infrared_topic: str = INFRARED_TOPIC
    visible_frame_id: str = VISIBLE_FRAME_ID
    infrared_frame_id: str = INFRARED_FRAME_ID
    compressed: bool = False  # CompressedImage on <topic>/compressed as image_transport names it
    reliability: str = 'reliable'
    depth: int = 10

    def topic_names(self) -> tuple[str, str]:
        """Return the (visible, infrared) topic names as written."""
        suffix = '/compressed' if self.compressed else ''
        return self.visible_topic + suffix, self.infrared_topic + suffix


def infrared_encoding(infrared: np.ndarray) -> str:
    """Return the ROS encoding of a thermal image: mono8 or mono16 (radiometric)."""
    if infrared.ndim != 2 or infrared.dtype not in (np.uint8, np.uint16):
        raise BagError(f'infrared must be (h, w) uint8 or uint16, got {infrared.shape} '
                       f'{infrared.dtype}')
    return 'mono8' if infrared.dtype == np.uint8 else 'mono16'


def write_pairs(path: str | Path, pairs: Iterable[tuple[np.ndarray, np.ndarray]],
                storage: Storage = 'sqlite3', stamps: StampModel | None = None,
                cameras: CameraTopics | None = None, overwrite: bool = False,
                progress: Any | None = None) -> dict[str, int]:
    """Write visible (h,w,3) RGB + infrared (h,w) pairs as two camera topics; return counts."""
    stamps = stamps or StampModel()
    cameras = cameras or CameraTopics()
    visible_topic, infrared_topic = cameras.topic_names()
    msgtype = COMPRESSED_IMAGE if cameras.compressed else IMAGE
    qos = camera_qos(cameras.reliability, cameras.depth)
    # A recorder logs each topic in arrival order: when two frames' simulated latencies differ
    # by more than a frame period, the later frame is logged just after the earlier one.
    last_log = {visible_topic: -1, infrared_topic: -1}
    with BagWriter(path, storage, overwrite) as writer:
        writer.add_topic(visible_topic, msgtype, qos)
        writer.add_topic(infrared_topic, msgtype, qos)
        for index, (visible, infrared) in enumerate(pairs):
            if visible.ndim != 3 or visible.shape[2] != 3 or visible.dtype != np.uint8:
                raise BagError(f'visible frame {index} must be (h, w, 3) uint8 RGB, got '
                               f'{visible.shape} {visible.dtype}')
            visible_stamp, infrared_stamp, visible_log, infrared_log = stamps.frame_stamps(index)
            visible_log = max(visible_log, last_log[visible_topic] + 1)
            infrared_log = max(infrared_log, last_log[infrared_topic] + 1)
            last_log = {visible_topic: visible_log, infrared_topic: infrared_log}
            items = [
                (visible_log, visible_stamp, visible_topic, visible, 'rgb8',
                 cameras.visible_frame_id),
                (infrared_log, infrared_stamp, infrared_topic, infrared,
                 infrared_encoding(infrared), cameras.infrared_frame_id)]
            for log_ns, stamp_ns, topic, array, encoding, frame_id in sorted(
                    items, key=lambda item: item[0]):
                if cameras.compressed:
                    fmt = 'jpeg' if encoding == 'rgb8' else 'png'
                    message = compressed_message(array, encoding, stamp_ns, frame_id, fmt)
                else:
                    message = image_message(array, encoding, stamp_ns, frame_id)
                writer.write(topic, log_ns, message)
            if progress is not None:
                progress.update(1)
        return dict(writer.counts)


def synthetic_pairs(count: int, width: int = 640, height: int = 512, seed: int = 0,
                    thermal_bits: int = 8) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield a deterministic synthetic night drive (moving objects) from ivf_ros.io.synthetic."""
    from ivf_ros.io.synthetic import make_night_pair

    for frame in range(count):
        pair = make_night_pair(seed=seed, width=width, height=height, frame=frame,
                               thermal_bits=thermal_bits)
        yield pair.visible, pair.infrared


def folder_pairs(folder: str | Path, count: int | None = None,
                 size: tuple[int, int] | None = None,
                 night_only: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Yield (visible RGB, infrared) pairs from a vi/ + ir/ folder, resized to size=(w, h)."""
    import cv2

    from ivf_ros.io.datasets import is_night, list_pairs, load_pair

    pairs = list_pairs(Path(folder))
    if night_only:
        pairs = [pair for pair in pairs if is_night(pair)]
    if not pairs:
        raise BagError(f'no image pairs in {folder} (expects vi/ and ir/ with matching names)')
    for pair in pairs[:count]:
        visible, infrared = load_pair(pair)
        if size is not None and (visible.shape[1], visible.shape[0]) != size:
            visible = cv2.resize(visible, size, interpolation=cv2.INTER_AREA)
            infrared = cv2.resize(infrared, size, interpolation=cv2.INTER_AREA)
        yield visible, infrared
