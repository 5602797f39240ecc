"""Open question: the training frame rate (experiments/sweep-fps). Drawn by dashboard.study_view.study_page."""

from dashboard.study_view import study_page

study_page("sweep-fps")
