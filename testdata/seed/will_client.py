# The seed's status script: a Last Will of {"status": "Off"} on
# raspberry/status. It prints "connected" once the broker accepted it and
# then blocks until the test kills it with SIGKILL.
# usage: will_client.py HOST PORT USER PASSWORD [tcp|websockets]
import os
import sys
import threading
import paho.mqtt.client as mqtt

host, port, user, password = sys.argv[1:5]
transport = sys.argv[5] if len(sys.argv) > 5 else "tcp"
connected = threading.Event()


def on_connect(client, userdata, flags, rc):
    if rc == 0:
        connected.set()
    else:
        print("rc=%d" % rc, flush=True)
        sys.exit(10 + rc)


client = mqtt.Client(client_id="seed-will-%d" % os.getpid(), transport=transport)
if transport == "websockets":
    client.ws_set_options(path="/mqtt")
client.username_pw_set(user, password)
client.will_set("raspberry/status", b'{"status": "Off"}', qos=1, retain=True)
client.on_connect = on_connect
client.connect(host, int(port), keepalive=30)
client.loop_start()
if not connected.wait(20):
    print("timeout", flush=True)
    sys.exit(3)
print("connected", flush=True)
threading.Event().wait()
