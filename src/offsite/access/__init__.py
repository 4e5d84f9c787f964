"""Who may use the API: people, their roles and tokens, and what a department may see."""
