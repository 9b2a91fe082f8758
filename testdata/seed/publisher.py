# The seed's phone-side publisher, as people run it today with paho 1.6:
# connect with a user and password, publish 0 and 1 to the LED topic.
# usage: publisher.py HOST PORT USER PASSWORD TOPIC VALUE [tcp|websockets]
import os
import sys
import paho.mqtt.client as mqtt

host, port, user, password, topic, value = sys.argv[1:7]
transport = sys.argv[7] if len(sys.argv) > 7 else "tcp"
result = {}


def on_connect(client, userdata, flags, rc):
    result["rc"] = rc
    if rc != 0:
        client.disconnect()
        return
    # The seed publishes ints: paho 1.6 turns them into their decimal text.
    # Waiting for the PUBACK here would block paho's network loop, so the
    # disconnect happens in on_publish.
    client.publish(topic, int(value), qos=1)


def on_publish(client, userdata, mid):
    client.disconnect()


# A fresh id per run: reusing one right after the previous run disconnected
# is a session takeover, a different test.
client = mqtt.Client(client_id="seed-publisher-%d" % os.getpid(), transport=transport)
if transport == "websockets":
    client.ws_set_options(path="/mqtt")
client.username_pw_set(user, password)
client.on_connect = on_connect
client.on_publish = on_publish
client.connect(host, int(port), keepalive=30)
client.loop_forever(timeout=1.0)
print("rc=%d" % result.get("rc", -1))
sys.exit(0 if result.get("rc") == 0 else 10 + result.get("rc", 90))
