"""Expression feedback on a candidate's recorded answer.

`measure` samples frames and measures the face on each (mediapipe face mesh with irises), `report`
turns the measures into a 0-100 score with its components and a short Mandarin or English summary,
`vision` optionally lets an OpenAI-compatible vision model write the summary, `db` stores the result
in the SQL table the interview backend reads.
"""
