"""MQTT adapter: topics and command parsing (pure), the broker link, and the bridge service."""

from orchestrator.mqtt.bridge import BridgeStats, MqttBridge, RelayHandler, ReplyStore
from orchestrator.mqtt.topics import Topics
from orchestrator.payloads import snapshot_json

__all__ = ["BridgeStats", "MqttBridge", "RelayHandler", "ReplyStore", "Topics", "snapshot_json"]
