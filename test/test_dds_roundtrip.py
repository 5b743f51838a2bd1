"""Real round trip over Fast DDS: 640x512 rgb8 and mono16 images between two processes."""

from __future__ import annotations

from collections import Counter
import json
import os
from pathlib import Path
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

from dds_helpers.frames import ENCODINGS, expected_digest, parse_frame_id
import pytest

HELPERS_ROOT = Path(__file__).resolve().parent  # children run `python -m dds_helpers.<name>`
FRAMES_PER_ENCODING = 4
XML_NAMESPACE = {'dds': 'http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles'}


@pytest.fixture(scope='module')
def profile(repo_root: Path) -> Path:
    """Return the package's Fast DDS profile."""
    return repo_root / 'config' / 'fastdds_large_images.xml'


@pytest.fixture
def dds_env(profile: Path) -> dict[str, str]:
    """Return the child environment: this run's domain, LOCALHOST discovery and the profile."""
    env = dict(os.environ)
    env['FASTDDS_DEFAULT_PROFILES_FILE'] = str(profile)
    env['RMW_IMPLEMENTATION'] = 'rmw_fastrtps_cpp'
    return env


def start_helper(name: str, args: list[str], env: dict[str, str]) -> subprocess.Popen:
    """Start test/dds_helpers/<name>.py in its own process (the venv's interpreter)."""
    return subprocess.Popen(
        [sys.executable, '-m', f'dds_helpers.{name}', *args], cwd=HELPERS_ROOT, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish(process: subprocess.Popen, timeout: float) -> tuple[int, str, str]:
    """Wait for a helper; on timeout terminate it (SIGTERM: clean DDS exit), then kill."""
    try:
        stdout, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            stdout, stderr = process.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
        stderr += f'\n[test] helper timed out after {timeout} s'
    return process.returncode, stdout, stderr


def test_profile_uses_fast_dds_3_syntax(profile: Path) -> None:
    root = ElementTree.parse(profile).getroot()
    transports = {
        descriptor.findtext('dds:transport_id', namespaces=XML_NAMESPACE): descriptor
        for descriptor in root.iterfind('.//dds:transport_descriptor', XML_NAMESPACE)}
    participant = root.find(".//dds:participant[@is_default_profile='true']", XML_NAMESPACE)
    assert participant is not None, 'no default participant profile: ROS would ignore the file'
    used = [element.text for element in participant.iterfind(
        './dds:rtps/dds:userTransports/dds:transport_id', XML_NAMESPACE)]
    assert used and set(used) <= set(transports)
    assert participant.findtext('./dds:rtps/dds:useBuiltinTransports',
                                namespaces=XML_NAMESPACE) == 'false'
    shm = [transports[name] for name in used
           if transports[name].findtext('dds:type', namespaces=XML_NAMESPACE) == 'SHM']
    assert shm and int(shm[0].findtext('dds:segment_size', namespaces=XML_NAMESPACE)) >= 64 << 20
    # Fast DDS 3 logs <interfaceWhiteList> as deprecated; <interfaces><allowlist> replaces it.
    assert root.find('.//dds:interfaceWhiteList', XML_NAMESPACE) is None


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_profile_takes_effect(dds_env: dict[str, str]) -> None:
    # Fast DDS only logs a broken profile and falls back to defaults: check what it opened.
    returncode, stdout, stderr = finish(start_helper('transport_probe', [], dds_env), 40)
    assert returncode == 0, stderr
    assert 'XMLPARSER' not in stdout + stderr, stdout + stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert max(report['shm_segments'].values()) >= 64 << 20, report
    domain = int(dds_env.get('ROS_DOMAIN_ID', '0'))
    first_port = 7400 + 250 * domain  # RTPS well-known ports of this domain (PB + DG * domain)
    rtps_sockets = [address for address in report['udp']
                    if first_port <= int(address.rsplit(':', 1)[1]) < first_port + 250]
    assert rtps_sockets, report
    assert all(address.startswith('127.0.0.1:') for address in rtps_sockets), report


@pytest.mark.ros
@pytest.mark.timeout(120)
@pytest.mark.parametrize('reliability', ['reliable', 'best_effort'])
def test_images_survive_bit_exact(
        dds_env: dict[str, str], tmp_path: Path, reliability: str) -> None:
    topic = f'ivf_roundtrip_{reliability}'
    expected_count = FRAMES_PER_ENCODING * len(ENCODINGS)
    output = tmp_path / 'received.json'
    subscriber = start_helper('image_subscriber', [
        '--topic', topic, '--reliability', reliability, '--count', str(expected_count),
        '--timeout', '60', '--idle-timeout', '5', '--output', str(output)], dds_env)
    publisher = start_helper('image_publisher', [
        '--topic', topic, '--reliability', reliability, '--encodings', ','.join(ENCODINGS),
        '--count', str(FRAMES_PER_ENCODING), '--rate', '10', '--match-timeout', '40',
        '--linger', '20'], dds_env)
    try:
        sub_code, _, sub_err = finish(subscriber, 90)
        pub_code, pub_out, pub_err = finish(publisher, 30)
    finally:
        for process in (subscriber, publisher):
            if process.poll() is None:
                process.kill()
                process.wait()
    assert pub_code == 0, f'publisher failed ({pub_code}): {pub_out}\n{pub_err}'
    assert json.loads(pub_out.strip().splitlines()[-1])['published'] == expected_count
    assert output.is_file(), f'subscriber wrote no report ({sub_code}): {sub_err}'
    frames = json.loads(output.read_text())['frames']

    names = [frame['frame_id'] for frame in frames]
    assert len(names) == len(set(names)), f'duplicated frames: {names}'
    for frame in frames:
        encoding, index = parse_frame_id(frame['frame_id'])
        assert frame['digest'] == expected_digest(encoding, index), frame['frame_id']
    per_encoding = Counter(parse_frame_id(name)[0] for name in names)
    if reliability == 'reliable':
        assert sub_code == 0, sub_err
        assert per_encoding == dict.fromkeys(ENCODINGS, FRAMES_PER_ENCODING)
    else:
        # Best effort may drop under load; what arrives must still be exact.
        assert set(per_encoding) == set(ENCODINGS), f'received only {names}'
