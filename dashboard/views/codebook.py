"""Open question: the codebook size (experiments/sweep-codebook). Drawn by dashboard.study_view.study_page."""

from dashboard.study_view import study_page

study_page("sweep-codebook")
