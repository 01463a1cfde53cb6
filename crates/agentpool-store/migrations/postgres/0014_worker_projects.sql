-- Workers limited to projects (registered with a token limited to them, or naming them): a JSON
-- array of project names; empty: tasks of any project and of none.
ALTER TABLE workers ADD COLUMN projects TEXT NOT NULL DEFAULT '[]';
