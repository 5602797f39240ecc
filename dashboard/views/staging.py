"""Open question: the staging schedule (experiments/sweep-staging). Drawn by dashboard.study_view.study_page."""

from dashboard.study_view import study_page

study_page("sweep-staging")
