"""The script `stockcast dashboard` hands to Streamlit (``streamlit run``)."""

from ml.dashboard.pages import main

main()
