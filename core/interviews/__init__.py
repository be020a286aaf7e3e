"""Interviews in live rooms: generated questions, pre-rendered question clips and stock clips.

`bank` and `generators` produce questions, `store` keeps the interview record and the stock-clip
cache in Redis and enqueues the render chains, `playback` puts a clip into a room's stream.
Every Redis key is built in `keys`.
"""

MAX_QUESTIONS = 20
STOCK_IDS = (96, 97, 98, 99)
