"""The local cloud reads a request body off the socket once and keeps it, so that it can be journaled and read again
after (and outside) moto's lock."""

import io

from labcloud.localcloud.http import buffer_body


class OneShotStream(io.BytesIO):
    """A socket's body stream: it can be read once."""

    def __init__(self, data: bytes):
        super().__init__(data)
        self.reads = 0

    def read(self, size=-1):
        self.reads += 1
        assert self.reads == 1, "the socket was read twice"
        return super().read(size)


def test_a_body_of_known_length_is_read_once_and_can_be_read_again():
    environ = {"wsgi.input": OneShotStream(b"hello world, and more"), "CONTENT_LENGTH": "11"}
    assert buffer_body(environ) == b"hello world"
    assert buffer_body(environ) == b"hello world"
    assert environ["wsgi.input"].read() == b"hello world"


def test_a_chunked_body_is_read_to_its_end():
    environ = {"wsgi.input": OneShotStream(b"chunks joined"), "wsgi.input_terminated": True}
    assert buffer_body(environ) == b"chunks joined"
    assert buffer_body(environ) == b"chunks joined"


def test_no_body_or_a_bad_length_is_empty():
    assert buffer_body({"wsgi.input": io.BytesIO(b"x")}) == b""
    assert buffer_body({"wsgi.input": io.BytesIO(b"x"), "CONTENT_LENGTH": "abc"}) == b""
