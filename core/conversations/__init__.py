"""Conversations: a live room that answers what it is told or hears.

A message (text, or audio recognised first) starts a turn. The room's responder (`script`, the
offline default, or `llm`, any OpenAI-compatible streaming chat server) produces the reply as a
stream of text; it is cut into sentences as it arrives and each sentence is synthesised and queued
to the room as soon as it is complete, so the avatar starts speaking after the first sentence.
A new message or an interrupt stops both the generation and the speech (barge-in); the history
keeps what was actually said. Everything a front-end follows (user text, reply text, speech start
and end, per-frame mouth values on the stream clock) goes to the room's feed (a Redis Stream).
"""
