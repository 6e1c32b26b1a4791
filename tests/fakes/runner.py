"""Runs store calls inline: the SQLite store without its thread, for unit tests."""

from twisted.internet.defer import fail, succeed


class ImmediateRunner:
    def start(self):
        pass

    def stop(self):
        pass

    def run(self, fn, *args, **kwargs):
        try:
            return succeed(fn(*args, **kwargs))
        except BaseException:
            return fail()
