# Connects the way the seed's scripts do (paho 1.6) with the right, a wrong
# and no credentials, and prints each CONNACK's code, so that the same
# script can be run against mosquitto and against pimqtt.
# usage: connack.py HOST PORT USER PASSWORD 3|5
import os
import sys
import paho.mqtt.client as mqtt

host, port, user, password, version = sys.argv[1:6]
proto = mqtt.MQTTv5 if version == "5" else mqtt.MQTTv311
cases = [("right", user, password), ("wrong password", user, password + "x"),
         ("unknown user", user + "x", password), ("no credentials", None, None)]
for name, u, p in cases:
    got = []

    def on_connect(client, userdata, flags, rc, properties=None):
        got.append(rc.value if proto == mqtt.MQTTv5 else rc)
        client.disconnect()

    client = mqtt.Client(client_id="seed-connack-%d" % os.getpid(), protocol=proto)
    if u is not None:
        client.username_pw_set(u, p)
    client.on_connect = on_connect
    client.connect(host, int(port), keepalive=30)
    client.loop_forever(timeout=1.0)
    print("%s: %s" % (name, got[0] if got else "no CONNACK"))
