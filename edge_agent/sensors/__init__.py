"""What the room device observes: WiFi access points, BLE beacons, GPS position and time."""
