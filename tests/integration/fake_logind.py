"""A stand-in for systemd-logind on a private bus: org.freedesktop.login1.Manager.Inhibit.

    python fake_logind.py BUS_ADDRESS

Answers Inhibit(what, who, why, mode) with the write end of a pipe, as logind answers
a descriptor whose closing releases the lock. Prints JSON lines: {"inhibit": [...]}
for each call, {"released": n} once the caller has closed lock n. Runs until killed.
"""

import json
import os
import sys

from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from txdbus import client, message
from txdbus.interface import DBusInterface, Method
from txdbus.objects import DBusObject, dbusMethod

MANAGER = "org.freedesktop.login1.Manager"


def _replies_carry_descriptors():
    """txdbus sends descriptors with method calls but not with replies: teach its replies (this stand-in only)."""
    marshal = message.MethodReturnMessage._marshal

    def _marshal(self, newSerial=True, oobFDs=None):
        fds = [] if oobFDs is None else oobFDs
        marshal(self, newSerial, fds)
        if fds:
            self.oobFDs = fds

    message.MethodReturnMessage._marshal = _marshal


def say(**message):
    print(json.dumps(message), flush=True)


class Manager(DBusObject):
    dbusInterfaces = [DBusInterface(MANAGER, Method("Inhibit", "ssss", "h"))]

    def __init__(self):
        super().__init__("/org/freedesktop/login1")
        self.locks = 0

    @dbusMethod(MANAGER, "Inhibit")
    def dbus_Inhibit(self, what, who, why, mode):
        self.locks += 1
        number = self.locks
        read_end, write_end = os.pipe()
        say(inhibit=[what, who, why, mode], lock=number)
        # Our copy of the write end goes once the answer is sent; EOF then means the caller closed its copy.
        reactor.callLater(0.5, os.close, write_end)
        reactor.addReader(_Released(read_end, number))
        return write_end


class _Released:
    def __init__(self, fd, number):
        self.fd, self.number = fd, number

    def fileno(self):
        return self.fd

    def doRead(self):
        if not os.read(self.fd, 1):
            reactor.removeReader(self)
            self.connectionLost(None)

    def connectionLost(self, reason):  # the reactor calls this itself on a hang-up
        os.close(self.fd)
        say(released=self.number)

    def logPrefix(self):
        return "fake-logind"


@inlineCallbacks
def main(address):
    conn = yield client.connect(reactor, address)
    conn.exportObject(Manager())
    yield conn.requestBusName("org.freedesktop.login1")
    say(ready=True)


if __name__ == "__main__":
    _replies_carry_descriptors()
    reactor.callWhenRunning(main, sys.argv[1])
    reactor.run()
