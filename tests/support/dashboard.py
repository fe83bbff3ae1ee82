"""The dashboard's aiohttp application in the test's process, asked over real HTTP on loopback (aiohttp's test
server), from synchronous tests."""
import asyncio

from aiohttp.test_utils import TestClient, TestServer

from pipeline.ui.app import make_app


class Dashboard:
    """make_app(config) served on a free loopback port; get(path) -> (status, content type, text)."""

    def __init__(self, config):
        self.loop = asyncio.new_event_loop()
        self.client = TestClient(TestServer(make_app(config)), loop=self.loop)
        self.loop.run_until_complete(self.client.start_server())

    def get(self, path: str):
        async def fetch():
            response = await self.client.get(path, allow_redirects=False)
            return response.status, response.content_type, await response.text(), response.headers
        return self.loop.run_until_complete(fetch())

    def close(self) -> None:
        self.loop.run_until_complete(self.client.close())
        self.loop.close()
