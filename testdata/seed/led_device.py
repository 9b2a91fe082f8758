# The seed's LED script, as people run it beside mosquitto today, with the
# GPIO write replaced by a variable (no GPIO here) and a retained state
# publish added so its latency can be compared with pimqtt's.
# usage: led_device.py HOST PORT USER PASSWORD
import sys
import paho.mqtt.client as mqtt

host, port, user, password = sys.argv[1:5]
led = {"value": 0}


def on_connect(client, userdata, flags, rc):
    client.subscribe("raspberry/led", qos=1)
    client.publish("raspberry/status", b'{"status": "On"}', qos=1, retain=True)


def on_message(client, userdata, msg):
    if msg.payload in (b"0", b"1"):
        led["value"] = int(msg.payload)
        client.publish("raspberry/led/state", msg.payload, qos=1, retain=True)
    else:
        print("unknown msg", msg.payload[:32], flush=True)


client = mqtt.Client(client_id="seed-led")
client.username_pw_set(user, password)
client.will_set("raspberry/status", b'{"status": "Off"}', qos=1, retain=True)
client.on_connect = on_connect
client.on_message = on_message
client.connect(host, int(port), keepalive=30)
client.loop_forever()
