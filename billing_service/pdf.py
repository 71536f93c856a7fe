"""A minimal PDF writer: pages of monospaced text, nothing else.

Why not a library: an invoice is a few dozen lines of text, and PDF 1.4 text objects with the
standard Courier font (every reader has it; nothing is embedded) are about a hundred lines of
code, against a new dependency (reportlab is ~4 MB with C extensions). The output is plain,
uncompressed PDF with a correct cross-reference table, so ``pdftotext`` and browsers read it.
"""

from __future__ import annotations

LINES_PER_PAGE = 60
PAGE_W, PAGE_H = 612, 792  # US Letter in points; A4 readers scale it
FONT_SIZE = 9
LEADING = 12


def _escape(text: str) -> str:
    # PDF literal strings: backslash and parentheses are escaped; the standard fonts speak
    # Latin-1 (WinAnsi), so anything else becomes "?" rather than garbage.
    text = text.encode("latin-1", "replace").decode("latin-1")
    return text.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")


def _content(lines: list[str]) -> bytes:
    ops = ["BT", f"/F1 {FONT_SIZE} Tf", f"{LEADING} TL", f"40 {PAGE_H - 50} Td"]
    for line in lines:
        ops.append(f"({_escape(line)}) Tj T*")
    ops.append("ET")
    return "\n".join(ops).encode("latin-1")


def render(lines: list[str], title: str = "Dante") -> bytes:
    """A PDF document showing ``lines`` top to bottom, 60 to a page."""
    pages = [lines[i : i + LINES_PER_PAGE] for i in range(0, len(lines), LINES_PER_PAGE)] or [[]]
    n = len(pages)
    # Object numbers: 1 catalog, 2 pages, 3 font, 4 info, then a (page, content) pair per page.
    objs: dict[int, bytes] = {}
    kids = " ".join(f"{5 + 2 * i} 0 R" for i in range(n))
    objs[1] = b"<< /Type /Catalog /Pages 2 0 R >>"
    objs[2] = f"<< /Type /Pages /Kids [{kids}] /Count {n} >>".encode()
    objs[3] = b"<< /Type /Font /Subtype /Type1 /BaseFont /Courier /Encoding /WinAnsiEncoding >>"
    objs[4] = f"<< /Title ({_escape(title)}) /Producer (Dante billing) >>".encode("latin-1")
    for i, page in enumerate(pages):
        page_no, content_no = 5 + 2 * i, 6 + 2 * i
        objs[page_no] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {PAGE_W} {PAGE_H}] "
            f"/Resources << /Font << /F1 3 0 R >> >> /Contents {content_no} 0 R >>"
        ).encode()
        stream = _content(page)
        objs[content_no] = (
            f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    offsets = {}
    for num in sorted(objs):
        offsets[num] = len(out)
        out += f"{num} 0 obj\n".encode() + objs[num] + b"\nendobj\n"
    xref_at = len(out)
    size = max(objs) + 1
    out += f"xref\n0 {size}\n".encode()
    out += b"0000000000 65535 f \n"
    for num in range(1, size):
        out += f"{offsets[num]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {size} /Root 1 0 R /Info 4 0 R >>\n".encode()
    out += f"startxref\n{xref_at}\n%%EOF\n".encode()
    return bytes(out)
