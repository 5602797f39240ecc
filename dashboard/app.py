"""The vidtok dashboard: review pipeline runs, studies, reconstructions and audits. Reads files only.

    make dashboard
    # = streamlit run dashboard/app.py --server.address 127.0.0.1 --server.port 8501 --server.headless true \
    #       --browser.gatherUsageStats false
    # another data root: VIDTOK_ROOT=/path make dashboard, or append `-- --root /path` to the streamlit command

Pages: Overview (latest pipeline run, every study's status), one page per open question (frame rate, codebook
size, staging schedule), Ablations (ours next to the paper's Tables 2-3), Reconstructions (videos, PSNR, token
maps) and Audit (latest `vidtok audit`, diff of two runs). Where the data is missing a page says which command
makes it; a corrupt file gets one line naming it. Nothing here imports torch or recomputes a result.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the repository root that holds the package.
_REPO = str(Path(__file__).resolve().parents[1])
if _REPO not in sys.path:
    sys.path.insert(0, _REPO)

import streamlit as st  # noqa: E402

from dashboard import data  # noqa: E402

VIEWS = Path(__file__).resolve().parent / "views"

st.set_page_config(page_title="vidtok dashboard", page_icon=":material/movie:", layout="wide")
# Page URLs are the view file names (/frame_rate, /codebook, ...): AppTest.switch_page finds pages by file name.
pages = {
    "Results": [st.Page(VIEWS / "overview.py", title="Overview", icon=":material/dashboard:", default=True)],
    "Open questions": [
        st.Page(VIEWS / "frame_rate.py", title="Frame rate", icon=":material/speed:"),
        st.Page(VIEWS / "codebook.py", title="Codebook size", icon=":material/grid_view:"),
        st.Page(VIEWS / "staging.py", title="Staging schedule", icon=":material/timeline:"),
    ],
    "Paper": [
        st.Page(VIEWS / "ablations.py", title="Ablations", icon=":material/science:"),
    ],
    "Inspect": [
        st.Page(VIEWS / "reconstructions.py", title="Reconstructions", icon=":material/movie:"),
        st.Page(VIEWS / "audit.py", title="Audit", icon=":material/fact_check:"),
    ],
}
page = st.navigation(pages)
st.sidebar.caption(f"Data root: `{data.root()}`")
st.sidebar.caption("Reads run, study, evaluation and audit files; refreshes when a file changes (rerun: R).")
try:
    page.run()
except Exception as err:  # a bug in a page, not bad data (bad data gets its own one-line message)
    st.error(f"This page could not be drawn: {type(err).__name__}: {' '.join(str(err).split())}")
    with st.expander("Details for a bug report"):
        st.code(traceback.format_exc())
