
$7e57c0de-0000-4000-8000-000000000009	c-hostile —îÊ"corpusR
o-1dZZZ