#!/usr/bin/env python3
"""Asks the device's cloud AI once through aiesimd (Broker.Ask) and prints the answer and
what it cost. Uses python3-dbus; the system bus, or DBUS_SYSTEM_BUS_ADDRESS.

    python3 docs/examples/ask.py "What is an eSIM?"
"""
import sys

import dbus

bus = dbus.SystemBus()
broker = dbus.Interface(
    bus.get_object("org.aiesim.AiEsim1", "/org/aiesim/AiEsim1"),
    "org.aiesim.AiEsim1.Broker",
)
question = " ".join(sys.argv[1:]) or "Hello!"
try:
    text, usage = broker.Ask(question, dbus.Dictionary({"max_tokens": dbus.UInt32(32)}, signature="sv"))
except dbus.DBusException as e:
    # e.g. org.aiesim.AiEsim1.Error.BudgetExceeded, with a sentence saying why.
    sys.exit(f"{e.get_dbus_name()}: {e.get_dbus_message()}")
print(text)
print(f"charged {int(usage['charged'])} tokens via {usage['endpoint']}")
