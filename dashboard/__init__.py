"""The vidtok dashboard: a Streamlit app that reads run, study, evaluation and audit files (never trains).

make dashboard        # streamlit run dashboard/app.py on http://127.0.0.1:8501
"""
